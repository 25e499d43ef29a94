-- The distinct images of collection %(collection_id)s as COCO `images` records (the COCO id is
-- the visearch image id), in the order of their best rank. width/height are pixels as displayed.
SELECT i.id, i.file_name, i.width, i.height, i.external_id, d.name AS dataset, min(ci.rank) AS best_rank
FROM collection_items ci
JOIN images i ON i.id = ci.image_id
JOIN datasets d ON d.id = i.dataset_id
WHERE ci.collection_id = %(collection_id)s
GROUP BY i.id, d.name
ORDER BY best_rank;
