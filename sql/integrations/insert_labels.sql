-- Image-level labels chosen in a tool (pairs of equal-length arrays). Returns the new ones.
INSERT INTO image_labels (image_id, concept_id, source)
SELECT i, c, %(source)s
FROM unnest(%(label_images)s::bigint[], %(label_concepts)s::bigint[]) AS t(i, c)
ON CONFLICT DO NOTHING
RETURNING 1;
