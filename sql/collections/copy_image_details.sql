-- After copy_images.sql: copy the image labels and, if %(with_annotations)s, the boxes of each
-- (source image, new image) pair. Boxes keep concept, box, iscrowd, source, score, external id
-- and metadata; the annotations_enqueue trigger queues them for embedding.
WITH pairs AS (
    SELECT * FROM unnest(%(source_ids)s::bigint[], %(new_ids)s::bigint[]) AS p (source_id, new_id)
),
labels AS (
    INSERT INTO image_labels (image_id, concept_id, source, score)
    SELECT p.new_id, l.concept_id, l.source, l.score
    FROM pairs p JOIN image_labels l ON l.image_id = p.source_id
    ON CONFLICT DO NOTHING
    RETURNING 1
),
boxes AS (
    INSERT INTO annotations (image_id, concept_id, bbox_x, bbox_y, bbox_w, bbox_h, iscrowd,
                             source, score, external_id, metadata)
    SELECT p.new_id, a.concept_id, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h, a.iscrowd,
           a.source, a.score, a.external_id, a.metadata
    FROM pairs p JOIN annotations a ON a.image_id = p.source_id
    WHERE %(with_annotations)s
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM labels) AS labels, (SELECT count(*) FROM boxes) AS annotations;
