-- `visearch status`: per dataset and model, the counts of the embedding_status view (see
-- 0002_freshness.sql) plus the running job's rate and an ETA.
--   workers       live workers embedding the model (heartbeat within %(alive_seconds)s s)
--   rate          their summed rate, items/s (moving average over recent batches)
--   eta_seconds   when this dataset's stale items should be done: the queue is served oldest
--                 first across datasets, so it is the model's claimable queue up to this
--                 dataset's newest stale item, divided by the rate. NULL: nothing stale, no
--                 live worker, or AI search disabled (then nothing is embedded automatically).
WITH live AS (
    SELECT model_id, count(*) AS workers, sum(rate) FILTER (WHERE state = 'embedding') AS rate
    FROM embedding_workers
    WHERE state <> 'stopped' AND heartbeat_at > now() - make_interval(secs => %(alive_seconds)s)
    GROUP BY model_id
)
SELECT s.dataset, s.search_enabled, s.model, s.model_active,
       s.images, s.objects, s.items, s.embedded, s.stale, s.retrying, s.in_progress, s.failed,
       s.covered,
       coalesce(live.workers, 0) AS workers,
       live.rate,
       CASE WHEN s.stale > 0 AND s.search_enabled AND live.rate > 0 THEN
           (SELECT count(*)
            FROM embedding_queue q JOIN datasets d ON d.id = q.dataset_id
            WHERE q.model_id = s.model_id AND NOT q.failed AND d.search_enabled
              AND q.enqueued_at <= (SELECT max(enqueued_at) FROM embedding_queue
                                    WHERE model_id = s.model_id AND dataset_id = s.dataset_id
                                      AND NOT failed)
           ) / live.rate
       END AS eta_seconds
FROM embedding_status s
LEFT JOIN live ON live.model_id = s.model_id
WHERE (%(dataset_ids)s::bigint[] IS NULL OR s.dataset_id = ANY (%(dataset_ids)s::bigint[]))
ORDER BY s.dataset, s.model_id;
