-- Remove the labels a collection tag added (source = %(source)s) from the collection's images.
-- Labels from other sources (COCO, folders, people) stay.
DELETE FROM image_labels l
WHERE l.source = %(source)s
  AND l.concept_id = ANY (%(concept_ids)s::bigint[])
  AND l.image_id IN (SELECT ci.image_id FROM collection_items ci
                     WHERE ci.collection_id = %(collection_id)s)
RETURNING 1;
