-- Boxes of dataset coco128 whose 10 nearest boxes (efficientnet-lite0 vectors) mostly carry
-- another concept: candidates for a wrong label, with the concept they look like and the
-- evidence (neighbour ids, their concepts and cosine similarities). Each box's neighbours come
-- from the model's HNSW index (one index scan per box; see label_error_suspects in
-- sql/schema/0007_curation.sql). Arguments: model, 'object' | 'image', dataset id (NULL: all),
-- k, minimum share of neighbours carrying the other concept.
SELECT item_id AS annotation_id, image_id, concept, looks_like, round(share::numeric, 2) AS share,
       neighbour_ids[1:5] AS first_neighbours, scores[1:5] AS first_scores
FROM label_error_suspects('efficientnet-lite0', 'object',
                          (SELECT id FROM datasets WHERE name = 'coco128'), 10, 0.6)
LIMIT 20;
