-- The model a search uses when it names none (the "serving model"), for datasets
-- %(dataset_ids)s (bigint[]; NULL = every dataset with AI search enabled).
--
-- Candidates: active models, and only those that embed text when %(needs_text)s.
-- A model COVERS the datasets when none of their items is stale for it: no queue row that is
-- not failed (waiting, being embedded, or backing off for a retry). Items given up on (failed)
-- do not block coverage: they would block it for ever; `visearch status` lists them.
-- Rule: the most recently activated candidate that covers the datasets; if none covers them, the
-- candidate with the fewest stale items there (ties: the most recently activated).
-- So a newly added model embeds in the background while searches keep using the model before
-- it, and takes over as soon as it covers the datasets searched.
SELECT m.id, m.name, m.dim, m.embeds_text, m.is_active, s.stale
FROM embedding_models m
CROSS JOIN LATERAL (
    SELECT count(*) AS stale
    FROM embedding_queue q
    JOIN datasets d ON d.id = q.dataset_id
    WHERE q.model_id = m.id
      AND NOT q.failed
      AND d.search_enabled
      AND (%(dataset_ids)s::bigint[] IS NULL OR q.dataset_id = ANY (%(dataset_ids)s::bigint[]))
) s
WHERE m.is_active
  AND (m.embeds_text OR NOT %(needs_text)s)
ORDER BY s.stale, m.activated_at DESC, m.id DESC
LIMIT 1;
