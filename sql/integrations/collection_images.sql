-- A collection's images in rank order (best rank of each), with the boxes to send as
-- predictions: images mode, every box of the image; objects mode, only the collection's boxes.
-- boxes: [[annotation id, concept name or null, x, y, w, h], ...] in COCO pixels.
WITH items AS (
    SELECT ci.image_id, min(ci.rank) AS best,
           array_agg(ci.annotation_id) FILTER (WHERE ci.annotation_id IS NOT NULL) AS box_ids
    FROM collection_items ci
    WHERE ci.collection_id = %(collection_id)s
    GROUP BY ci.image_id
)
SELECT i.id, i.width, i.height, i.source_uri,
       coalesce(jsonb_agg(jsonb_build_array(a.id, k.name, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h)
                          ORDER BY a.id) FILTER (WHERE a.id IS NOT NULL), '[]'::jsonb) AS boxes
FROM items
JOIN images i ON i.id = items.image_id
LEFT JOIN annotations a ON a.image_id = i.id
     AND (%(mode)s = 'images' OR a.id = ANY(items.box_ids))
LEFT JOIN concepts k ON k.id = a.concept_id
GROUP BY i.id, items.best
ORDER BY items.best;
