-- Image-level labels from a tool on its project's images that the tool no longer has.
DELETE FROM image_labels l
WHERE l.image_id = ANY(%(image_ids)s::bigint[])
  AND l.source = %(source)s
  AND NOT EXISTS (
      SELECT 1 FROM unnest(%(label_images)s::bigint[], %(label_concepts)s::bigint[]) AS k(i, c)
      WHERE k.i = l.image_id AND k.c = l.concept_id)
RETURNING 1;
