-- Move staged vectors (COPY'd into the session's temp table) into object_embeddings, with each
-- box's image id (the distribution key on Citus, sql/schema/0014_object_image_id.sql). A box
-- deleted since it was claimed has no row to join and is skipped.
INSERT INTO object_embeddings AS e (model_id, annotation_id, image_id, embedding)
SELECT %(model_id)s, s.item_id, a.image_id, s.embedding
FROM staged_vectors s
JOIN annotations a ON a.id = s.item_id
WHERE s.item_id = ANY (%(ids)s::bigint[]) AND a.id = ANY (%(ids)s::bigint[])
ON CONFLICT (model_id, annotation_id, image_id) DO UPDATE
    SET embedding = EXCLUDED.embedding, embedded_at = EXCLUDED.embedded_at;  -- now(): Citus wants IMMUTABLE here
