-- Move staged vectors (COPY'd into the session's temp table) into object_embeddings.
INSERT INTO object_embeddings AS e (model_id, annotation_id, embedding)
SELECT %(model_id)s, s.item_id, s.embedding
FROM staged_vectors s
WHERE s.item_id = ANY (%(ids)s::bigint[])
ON CONFLICT (model_id, annotation_id) DO UPDATE
    SET embedding = EXCLUDED.embedding, embedded_at = now();
