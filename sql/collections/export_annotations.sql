-- The boxes of collection %(collection_id)s as COCO `annotations` (bbox [x, y, w, h] pixels):
-- in objects mode (%(objects_only)s) the collection's boxes, in images mode every box of its
-- images. category_id is the concept id (NULL: a box without a concept).
-- The items are read first (MATERIALIZED), and boxes found by (image id, box id): on Citus
-- collection_items is not co-located with the boxes, which are distributed on the image id.
WITH items AS MATERIALIZED (
    SELECT DISTINCT ci.image_id, CASE WHEN %(objects_only)s THEN ci.annotation_id END AS annotation_id
    FROM collection_items ci
    WHERE ci.collection_id = %(collection_id)s
)
SELECT a.id, a.image_id, a.concept_id, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h, a.iscrowd,
       a.score, k.name AS concept
FROM items t
JOIN annotations a ON a.image_id = t.image_id AND (t.annotation_id IS NULL OR a.id = t.annotation_id)
LEFT JOIN concepts k ON k.id = a.concept_id
ORDER BY a.image_id, a.id;
