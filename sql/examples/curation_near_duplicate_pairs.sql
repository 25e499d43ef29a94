-- Pairs of boxes in dataset coco128 whose efficientnet-lite0 vectors have cosine similarity
-- >= 0.9: each box looks up its 5 nearest boxes through the model's HNSW index (never all
-- pairs; see near_duplicate_pairs in sql/schema/0007_curation.sql). `visearch duplicates`
-- joins such pairs into groups (kept incrementally in neighbour_edges).
SELECT p.item_id AS annotation_id, p.neighbour_id AS near_duplicate, round(p.similarity::numeric, 4) AS similarity
FROM near_duplicate_pairs('efficientnet-lite0', 'object',
                          (SELECT id FROM datasets WHERE name = 'coco128'), 5, 0.9) AS p
LIMIT 20;
