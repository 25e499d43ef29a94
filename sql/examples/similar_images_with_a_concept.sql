-- The 10 images most like image 1 that show a person, with their cosine similarity.
-- One statement: the model's HNSW index orders, the joins filter. Iterative scans (pgvector
-- >= 0.8) keep scanning the index until 10 rows pass the filter.
-- Change the model name, the image id and the concept tag in `params`.
BEGIN;
SET LOCAL hnsw.iterative_scan = relaxed_order;
SET LOCAL hnsw.ef_search = 100;

WITH params AS (
    SELECT m.id AS model_id, m.dim, q.embedding AS query
    FROM embedding_models m
    JOIN image_embeddings q ON q.model_id = m.id AND q.image_id = 1
    WHERE m.name = 'efficientnet-lite0'
)
SELECT i.id AS image_id, i.file_name,
       round((1 - (e.embedding <=> p.query))::numeric, 4) AS similarity
FROM params p
JOIN image_embeddings e ON e.model_id = p.model_id
JOIN images i ON i.id = e.image_id
WHERE EXISTS (SELECT 1 FROM annotations a JOIN concepts k ON k.id = a.concept_id
              WHERE a.image_id = i.id AND k.tag = 'person')
ORDER BY e.embedding <=> p.query
LIMIT 10;

COMMIT;
