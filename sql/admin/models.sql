-- Registered models, oldest first, with their vectors and queue (`visearch model list`).
-- Columns are the fields of visearch.admin.ModelInfo but `queued`, which is
-- visearch.db.queue.queued (sql/queue/queued.sql) per model.
SELECT m.id, m.name, m.dim, m.embeds_text, m.is_active, m.activated_at,
       (SELECT count(*) FROM image_embeddings e WHERE e.model_id = m.id) AS image_vectors,
       (SELECT count(*) FROM object_embeddings e WHERE e.model_id = m.id) AS object_vectors,
       (SELECT count(*) FROM embedding_queue q WHERE q.model_id = m.id AND q.failed) AS failed
FROM embedding_models m
ORDER BY m.id;
