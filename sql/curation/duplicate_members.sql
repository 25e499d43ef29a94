-- What deciding a group's keeper needs of items %(ids)s (bigint[]) of kind %(kind)s: pixels
-- (the image's, or the box's area in pixels for objects), when the image was added, and what a
-- person reads. Keeper rule (visearch.curation.duplicates): most pixels, then oldest, then id.
SELECT i.id AS item_id, i.id AS image_id, (i.width::float8 * i.height) AS pixels, i.created_at,
       d.name AS dataset, i.file_name, i.width, i.height, NULL::text AS concept
FROM images i JOIN datasets d ON d.id = i.dataset_id
WHERE %(kind)s = 'image' AND i.id = ANY (%(ids)s::bigint[])
UNION ALL
SELECT a.id, a.image_id, a.bbox_w * a.bbox_h, i.created_at, d.name, i.file_name,
       round(a.bbox_w)::int, round(a.bbox_h)::int, k.name
FROM annotations a JOIN images i ON i.id = a.image_id JOIN datasets d ON d.id = i.dataset_id
LEFT JOIN concepts k ON k.id = a.concept_id
WHERE %(kind)s = 'object' AND a.id = ANY (%(ids)s::bigint[]);
