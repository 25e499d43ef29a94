-- Label every image of a collection with each concept (image_labels.source = %(source)s);
-- labels already there are left alone; %(image_ids)s (bigint[] or NULL): only those of its
-- images. Returns one row per label added.
INSERT INTO image_labels (image_id, concept_id, source)
SELECT DISTINCT ci.image_id, k.concept_id, %(source)s
FROM collection_items ci
CROSS JOIN unnest(%(concept_ids)s::bigint[]) AS k (concept_id)
WHERE ci.collection_id = %(collection_id)s
  AND (%(image_ids)s::bigint[] IS NULL OR ci.image_id = ANY(%(image_ids)s::bigint[]))
ON CONFLICT (image_id, concept_id, source) DO NOTHING
RETURNING 1;
