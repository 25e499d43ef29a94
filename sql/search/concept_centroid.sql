-- The query of a search made only of #concepts: the centroid of the items carrying them
-- (within the filters), renormalised to unit length. A psycopg.sql template ({source},
-- {filters} and {dim} as in rank_images.sql); `e` is the vector table.
-- Each image weighs the same: its items' unit vectors are averaged (and renormalised) per image
-- first, then the images' means are averaged, so a photo with twenty bottles counts once. For
-- objects, boxes smaller than %(min_box_area)s px² are left out by {filters} (the caller retries
-- without that bound when it leaves nothing).
SELECT l2_normalize(avg(per_image.mean)), sum(per_image.items)::bigint
FROM (
    SELECT l2_normalize(avg(e.embedding::vector({dim}))) AS mean, count(*) AS items
    FROM {source}
    WHERE e.model_id = %(model_id)s
      AND {filters}
    GROUP BY {image_id}
) AS per_image
