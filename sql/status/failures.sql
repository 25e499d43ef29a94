-- Items given up on (failed after the attempt limit) and items still being retried, grouped by
-- dataset, model, kind and reason. The reason is last_error up to its first ': ' (e.g.
-- "undecodable image (truncated)", "bad box"), so items failing the same way fall in one group
-- whatever their ids or paths; one full message and up to 5 item ids show an example.
SELECT d.name AS dataset,
       m.name AS model,
       q.item_kind,
       q.failed AS given_up,
       split_part(coalesce(q.last_error, '?'), ': ', 1) AS reason,
       count(*) AS items,
       max(q.attempts) AS max_attempts,
       min(q.last_error) AS example,
       (array_agg(q.item_id ORDER BY q.item_id))[1:5] AS example_ids
FROM embedding_queue q
JOIN datasets d ON d.id = q.dataset_id
JOIN embedding_models m ON m.id = q.model_id
WHERE q.last_error IS NOT NULL
  AND (%(dataset_ids)s::bigint[] IS NULL OR q.dataset_id = ANY (%(dataset_ids)s::bigint[]))
GROUP BY d.name, m.name, q.item_kind, q.failed, split_part(coalesce(q.last_error, '?'), ': ', 1)
ORDER BY d.name, m.name, q.failed DESC, count(*) DESC;
