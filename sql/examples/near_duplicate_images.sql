-- Pairs of images whose vectors are nearly identical (cosine similarity >= 0.95): re-encodes,
-- resizes and crops of the same photo. Each image looks up its 5 nearest neighbours through the
-- model's HNSW index (a LATERAL join: one index scan per image, not every pair).
-- The index is a partial index on embedding::vector(<dim>) WHERE model_id = <id>: a query uses
-- it only when it says both literally. Here model 1, 1280-d (efficientnet-lite0); find yours
-- with `SELECT id, name, dim FROM embedding_models`.
BEGIN;
SET LOCAL hnsw.ef_search = 40;

SELECT a.image_id AS image, b.image_id AS near_duplicate, round(b.similarity::numeric, 4) AS similarity
FROM image_embeddings a
CROSS JOIN LATERAL (
    SELECT e.image_id, 1 - (e.embedding::vector(1280) <=> a.embedding::vector(1280)) AS similarity
    FROM image_embeddings e
    WHERE e.model_id = 1
    ORDER BY e.embedding::vector(1280) <=> a.embedding::vector(1280)
    LIMIT 6  -- the image itself and its 5 nearest neighbours
) b
WHERE a.model_id = 1 AND b.image_id <> a.image_id AND b.similarity >= 0.95 AND a.image_id < b.image_id
ORDER BY similarity DESC, image, near_duplicate;

COMMIT;
