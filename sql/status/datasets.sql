-- `visearch status`: per dataset and model, the counts of the embedding_status view (see
-- 0002_freshness.sql) plus the running job's rate and an ETA.
--   workers       live workers embedding the model (heartbeat within %(alive_seconds)s s)
--   rate          their summed rate, items/s (moving average over recent batches)
--   eta_seconds   when this dataset's stale items should be done: the queue is served oldest
--                 first across datasets, so it is the model's claimable queue up to this
--                 dataset's newest stale item, divided by the rate. NULL: nothing stale, no
--                 live worker, or AI search disabled (then nothing is embedded automatically).
--   index_missing the model's vector kinds ('image', 'object') that have vectors but no valid
--                 HNSW index (a bulk load killed before its rebuild, a build in progress or
--                 interrupted): searches of them scan exactly until the next embed run or
--                 worker pass builds it.
WITH live AS (
    SELECT model_id, count(*) AS workers, sum(rate) FILTER (WHERE state = 'embedding') AS rate
    FROM embedding_workers
    WHERE state <> 'stopped' AND heartbeat_at > now() - make_interval(secs => %(alive_seconds)s)
    GROUP BY model_id
),
indexes AS (
    SELECT m.id AS model_id,
           array_remove(ARRAY[
               CASE WHEN EXISTS (SELECT 1 FROM image_embeddings e WHERE e.model_id = m.id)
                     AND NOT coalesce((SELECT i.indisvalid AND i.indisready FROM pg_index i
                                       WHERE i.indexrelid = to_regclass(hnsw_index_name('image_embeddings', m.id))),
                                      false)
                    THEN 'image' END,
               CASE WHEN EXISTS (SELECT 1 FROM object_embeddings e WHERE e.model_id = m.id)
                     AND NOT coalesce((SELECT i.indisvalid AND i.indisready FROM pg_index i
                                       WHERE i.indexrelid = to_regclass(hnsw_index_name('object_embeddings', m.id))),
                                      false)
                    THEN 'object' END], NULL) AS index_missing
    FROM embedding_models m
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
       END AS eta_seconds,
       indexes.index_missing
FROM embedding_status s
LEFT JOIN live ON live.model_id = s.model_id
JOIN indexes ON indexes.model_id = s.model_id
WHERE (%(dataset_ids)s::bigint[] IS NULL OR s.dataset_id = ANY (%(dataset_ids)s::bigint[]))
ORDER BY s.dataset, s.model_id;
