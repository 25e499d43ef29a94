-- Pairs of images whose vectors are nearly identical (cosine similarity >= 0.95): re-encodes,
-- resizes and crops of the same photo. Each image looks up its 5 nearest neighbours (a LATERAL
-- join; with an HNSW index each lookup is an index scan).
SELECT a.id AS image, b.image_id AS near_duplicate, round(b.similarity::numeric, 4) AS similarity
FROM images a
JOIN image_embeddings ea ON ea.image_id = a.id
JOIN embedding_models m ON m.id = ea.model_id AND m.name = 'efficientnet-lite0'
CROSS JOIN LATERAL (
    SELECT e.image_id, 1 - (e.embedding <=> ea.embedding) AS similarity
    FROM image_embeddings e
    WHERE e.model_id = ea.model_id AND e.image_id <> a.id
    ORDER BY e.embedding <=> ea.embedding
    LIMIT 5
) b
WHERE b.similarity >= 0.95 AND a.id < b.image_id
ORDER BY similarity DESC;
