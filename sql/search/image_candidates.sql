-- The images a search may return, before ranking: one row per image that has a vector for the
-- model and passes every filter. Used as a subquery (Postgres flattens it, so the ranking's
-- ORDER BY can still use the HNSW index) and counted to pick exact or approximate search.
-- Each optional filter is written `(<parameter is empty> OR <condition>)`: visearch runs
-- statements with their parameters known at planning time (no generic plans), so an unused
-- filter folds to TRUE and disappears from the plan.
--   %(dataset_ids)s          bigint[] or NULL (all)   only datasets with AI search enabled
--   %(concept_ids)s          bigint[]                 the image shows all of them (box or label)
--   %(exclude_concept_ids)s  bigint[]                 the image shows none of them
--   %(metadata)s             jsonb or NULL            images.metadata contains it
--   %(created_from)s, %(created_to)s  timestamptz or NULL   created_from <= created_at < created_to
SELECT e.image_id, e.embedding, i.dataset_id
FROM image_embeddings e
JOIN images i ON i.id = e.image_id
JOIN datasets d ON d.id = i.dataset_id
WHERE e.model_id = %(model_id)s
  AND d.search_enabled
  AND (%(dataset_ids)s::bigint[] IS NULL OR i.dataset_id = ANY (%(dataset_ids)s::bigint[]))
  AND (cardinality(%(concept_ids)s::bigint[]) = 0 OR i.id IN (
      -- images carrying every required concept, as a box or as an image label
      SELECT tagged.image_id
      FROM (SELECT a.image_id, a.concept_id FROM annotations a
            WHERE a.concept_id = ANY (%(concept_ids)s::bigint[])
            UNION
            SELECT l.image_id, l.concept_id FROM image_labels l
            WHERE l.concept_id = ANY (%(concept_ids)s::bigint[])) AS tagged
      GROUP BY tagged.image_id
      HAVING count(DISTINCT tagged.concept_id) = cardinality(%(concept_ids)s::bigint[])))
  AND (cardinality(%(exclude_concept_ids)s::bigint[]) = 0 OR i.id NOT IN (
      SELECT a.image_id FROM annotations a WHERE a.concept_id = ANY (%(exclude_concept_ids)s::bigint[])
      UNION ALL
      SELECT l.image_id FROM image_labels l WHERE l.concept_id = ANY (%(exclude_concept_ids)s::bigint[])))
  AND (%(metadata)s::jsonb IS NULL OR i.metadata @> %(metadata)s::jsonb)
  AND (%(created_from)s::timestamptz IS NULL OR i.created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR i.created_at < %(created_to)s::timestamptz)
