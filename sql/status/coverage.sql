-- How much of the searched datasets model %(model_id)s can search, for items of kind %(kind)s
-- ('image' | 'object'); %(dataset_ids)s bigint[] or NULL (every dataset with AI search enabled).
--   total   items of the kind in the datasets
--   queued  of those, without a vector and queued (waiting, being embedded, or retrying)
--   failed  of those, without a vector and given up on
-- An active model has every item without a vector in its queue (triggers, 0001), so
-- total - queued - failed items are searchable. Items that have a vector and are queued again
-- (changed) are searchable with their previous vector and count as ready.
SELECT q.queued, q.failed,
    CASE %(kind)s
        WHEN 'image' THEN
            (SELECT count(*) FROM images i JOIN datasets d ON d.id = i.dataset_id
             WHERE d.search_enabled
               AND (%(dataset_ids)s::bigint[] IS NULL OR i.dataset_id = ANY (%(dataset_ids)s::bigint[])))
        ELSE
            (SELECT count(*) FROM annotations a JOIN images i ON i.id = a.image_id
             JOIN datasets d ON d.id = i.dataset_id
             WHERE d.search_enabled
               AND (%(dataset_ids)s::bigint[] IS NULL OR i.dataset_id = ANY (%(dataset_ids)s::bigint[])))
    END AS total
FROM (
    -- one pass over the model's queue rows for these items, both counts at once
    SELECT count(*) FILTER (WHERE NOT q.failed) AS queued,
           count(*) FILTER (WHERE q.failed) AS failed
    FROM embedding_queue q JOIN datasets d ON d.id = q.dataset_id
    WHERE q.model_id = %(model_id)s AND q.item_kind = %(kind)s AND d.search_enabled
      AND (%(dataset_ids)s::bigint[] IS NULL OR q.dataset_id = ANY (%(dataset_ids)s::bigint[]))
      AND NOT EXISTS (SELECT 1 FROM image_embeddings e
                      WHERE %(kind)s = 'image' AND e.model_id = q.model_id AND e.image_id = q.item_id)
      AND NOT EXISTS (SELECT 1 FROM object_embeddings e
                      WHERE %(kind)s = 'object' AND e.model_id = q.model_id AND e.annotation_id = q.item_id)
) q;
