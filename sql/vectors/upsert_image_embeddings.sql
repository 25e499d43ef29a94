-- Move staged vectors (COPY'd into the session's temp table) into image_embeddings.
INSERT INTO image_embeddings AS e (model_id, image_id, embedding)
SELECT %(model_id)s, s.item_id, s.embedding
FROM staged_vectors s
WHERE s.item_id = ANY (%(ids)s::bigint[])
ON CONFLICT (model_id, image_id) DO UPDATE
    SET embedding = EXCLUDED.embedding, embedded_at = EXCLUDED.embedded_at;  -- now(): Citus wants IMMUTABLE here
