-- The boxes of collection %(collection_id)s as COCO `annotations` (bbox [x, y, w, h] pixels):
-- in objects mode (%(objects_only)s) the collection's boxes, in images mode every box of its
-- images. category_id is the concept id (NULL: a box without a concept).
SELECT a.id, a.image_id, a.concept_id, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h, a.iscrowd,
       a.score, k.name AS concept
FROM annotations a
LEFT JOIN concepts k ON k.id = a.concept_id
WHERE CASE WHEN %(objects_only)s
           THEN a.id IN (SELECT annotation_id FROM collection_items WHERE collection_id = %(collection_id)s)
           ELSE a.image_id IN (SELECT image_id FROM collection_items WHERE collection_id = %(collection_id)s)
      END
ORDER BY a.image_id, a.id;
