-- The objects (annotation boxes) a search may return, before ranking: one row per box that has
-- a vector for the model and passes every filter. With concept terms, the box's own concept is
-- one of them and its image shows all of them ("#person #bicycle": people and bicycles in
-- images that have both). Parameters and the `(<empty> OR <condition>)` form as in
-- image_candidates.sql.
SELECT e.annotation_id, e.embedding, a.image_id, i.dataset_id
FROM object_embeddings e
JOIN annotations a ON a.id = e.annotation_id
JOIN images i ON i.id = a.image_id
JOIN datasets d ON d.id = i.dataset_id
WHERE e.model_id = %(model_id)s
  AND d.search_enabled
  AND (%(dataset_ids)s::bigint[] IS NULL OR i.dataset_id = ANY (%(dataset_ids)s::bigint[]))
  AND (cardinality(%(concept_ids)s::bigint[]) = 0 OR (
      a.concept_id = ANY (%(concept_ids)s::bigint[])
      AND a.image_id IN (
          SELECT tagged.image_id
          FROM (SELECT other.image_id, other.concept_id FROM annotations other
                WHERE other.concept_id = ANY (%(concept_ids)s::bigint[])
                UNION
                SELECT l.image_id, l.concept_id FROM image_labels l
                WHERE l.concept_id = ANY (%(concept_ids)s::bigint[])) AS tagged
          GROUP BY tagged.image_id
          HAVING count(DISTINCT tagged.concept_id) = cardinality(%(concept_ids)s::bigint[]))))
  AND (cardinality(%(exclude_concept_ids)s::bigint[]) = 0
       OR a.concept_id IS NULL OR a.concept_id <> ALL (%(exclude_concept_ids)s::bigint[]))
  AND (%(metadata)s::jsonb IS NULL OR i.metadata @> %(metadata)s::jsonb)
  AND (%(created_from)s::timestamptz IS NULL OR i.created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR i.created_at < %(created_to)s::timestamptz)
