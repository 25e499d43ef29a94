-- One page of a collection's items in rank order, with what a client shows for each: the
-- image (dataset, file, size) and, for objects, the box (COCO [x, y, w, h] pixels) and concept.
-- Ranks are frozen at search time, so the same offset always gives the same items (items whose
-- image or box was deleted since are gone; the others keep their order).
-- The page is cut from collection_items first, then joined by image id: on Citus the items are
-- distributed on the collection id and the images on their id, and a join of the two is
-- refused, while the page's few rows join each image's shard.
WITH page AS MATERIALIZED (
    SELECT ci.rank, ci.score, ci.image_id, ci.annotation_id
    FROM collection_items ci
    WHERE ci.collection_id = %(collection_id)s
    ORDER BY ci.rank
    OFFSET %(offset)s
    LIMIT %(limit)s
)
SELECT p.rank, p.score::float8 AS score, p.image_id, p.annotation_id,
       d.name AS dataset, i.file_name, i.width, i.height, i.external_id,
       CASE WHEN a.id IS NOT NULL THEN ARRAY[a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h]::float8[] END AS bbox_xywh,
       k.name AS concept, a.iscrowd
FROM page p
JOIN images i ON i.id = p.image_id
JOIN datasets d ON d.id = i.dataset_id
LEFT JOIN annotations a ON a.id = p.annotation_id AND a.image_id = i.id
LEFT JOIN concepts k ON k.id = a.concept_id
ORDER BY p.rank;
