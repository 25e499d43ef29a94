-- What is queued: items waiting to be embedded, per item kind ('image' | 'object').
-- The one count of the queue (visearch.db.queue.queued): embed runs, the worker's backlog, the
-- HTTP embed trigger, `visearch model add|list` all read it.
--   queued = not given up on (NOT failed) and in a dataset with AI search enabled (a disabled
--            dataset's items stay in the queue but nothing embeds them until it is enabled);
--            of the model %(model_id)s, or of every active model when it is NULL;
--            in the datasets %(dataset_ids)s (NULL: all).
-- The embedding_status view (0002_freshness.sql) counts the same rows per dataset as `stale`,
-- there for disabled datasets too.
SELECT q.item_kind, count(*) AS items
FROM embedding_queue q
JOIN datasets d ON d.id = q.dataset_id
JOIN embedding_models m ON m.id = q.model_id
WHERE NOT q.failed
  AND d.search_enabled
  AND (%(model_id)s::integer IS NULL AND m.is_active OR q.model_id = %(model_id)s::integer)
  AND (%(dataset_ids)s::bigint[] IS NULL OR q.dataset_id = ANY (%(dataset_ids)s::bigint[]))
GROUP BY q.item_kind;
