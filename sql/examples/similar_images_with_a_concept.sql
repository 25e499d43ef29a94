-- The 10 images most like image 1 that show a person, with their cosine similarity.
-- One statement: the model's HNSW index orders, the EXISTS filters each row; iterative scans
-- (pgvector >= 0.8) keep reading the index until 10 rows pass the filter.
-- The index is a partial index on embedding::vector(<dim>) WHERE model_id = <id>: a query uses
-- it only when it says both literally. Here model 1, 1280-d (efficientnet-lite0); find yours
-- with `SELECT id, name, dim FROM embedding_models`. Change the image id and the tag too.
BEGIN;
SET LOCAL hnsw.iterative_scan = relaxed_order;
SET LOCAL hnsw.ef_search = 100;

SELECT i.id AS image_id, i.file_name,
       round((1 - (e.embedding::vector(1280) <=> q.embedding::vector(1280)))::numeric, 4) AS similarity
FROM (SELECT embedding FROM image_embeddings WHERE model_id = 1 AND image_id = 1) q
CROSS JOIN LATERAL (
    SELECT e.image_id, e.embedding
    FROM image_embeddings e
    WHERE e.model_id = 1
      AND EXISTS (SELECT 1 FROM annotations a JOIN concepts k ON k.id = a.concept_id
                  WHERE a.image_id = e.image_id AND k.tag = 'person')
    ORDER BY e.embedding::vector(1280) <=> q.embedding::vector(1280)
    LIMIT 10
) e
JOIN images i ON i.id = e.image_id
ORDER BY similarity DESC, image_id;

COMMIT;
