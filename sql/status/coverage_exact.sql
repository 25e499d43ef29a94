-- Coverage for a model that is not active (its queue is not kept, so it cannot be trusted):
-- items of kind %(kind)s in datasets %(dataset_ids)s (NULL = all enabled) and how many have a
-- vector for model %(model_id)s. Counts every item: slower than coverage.sql.
SELECT count(*) AS total,
       count(*) FILTER (WHERE has_vector) AS ready
FROM (
    SELECT EXISTS (SELECT 1 FROM image_embeddings e WHERE e.model_id = %(model_id)s AND e.image_id = i.id)
               AS has_vector
    FROM images i JOIN datasets d ON d.id = i.dataset_id
    WHERE %(kind)s = 'image' AND d.search_enabled
      AND (%(dataset_ids)s::bigint[] IS NULL OR i.dataset_id = ANY (%(dataset_ids)s::bigint[]))
    UNION ALL
    SELECT EXISTS (SELECT 1 FROM object_embeddings e WHERE e.model_id = %(model_id)s AND e.annotation_id = a.id)
    FROM annotations a JOIN images i ON i.id = a.image_id JOIN datasets d ON d.id = i.dataset_id
    WHERE %(kind)s = 'object' AND d.search_enabled
      AND (%(dataset_ids)s::bigint[] IS NULL OR i.dataset_id = ANY (%(dataset_ids)s::bigint[]))
) items;
