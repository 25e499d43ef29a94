-- Whether model %(model_id)s may be missing vectors for items of kind %(kind)s in datasets
-- %(dataset_ids)s (NULL = every dataset with AI search enabled): any queue row at all, failed
-- or not. False (the common case) means every item is searchable, with no counting; true means
-- search runs coverage.sql for the numbers. One index probe.
SELECT EXISTS (
    SELECT 1
    FROM embedding_queue q
    JOIN datasets d ON d.id = q.dataset_id
    WHERE q.model_id = %(model_id)s
      AND q.item_kind = %(kind)s
      AND d.search_enabled
      AND (%(dataset_ids)s::bigint[] IS NULL OR q.dataset_id = ANY (%(dataset_ids)s::bigint[]))
);
