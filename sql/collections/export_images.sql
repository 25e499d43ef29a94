-- The distinct images of collection %(collection_id)s as COCO `images` records (the COCO id is
-- the visearch image id), in the order of their best rank. width/height are pixels as displayed.
-- The items are read first (MATERIALIZED): on Citus collection_items is distributed on the
-- collection id and images on the image id, and a join of the two is not co-located.
WITH items AS MATERIALIZED (
    SELECT ci.image_id, min(ci.rank) AS best_rank
    FROM collection_items ci
    WHERE ci.collection_id = %(collection_id)s
    GROUP BY ci.image_id
)
SELECT i.id, i.file_name, i.width, i.height, i.external_id, d.name AS dataset, t.best_rank
FROM items t
JOIN images i ON i.id = t.image_id
JOIN datasets d ON d.id = i.dataset_id
ORDER BY t.best_rank;
