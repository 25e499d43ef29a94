-- The boxes of annotations %(ids)s, grouped by image: the embedder then decodes each image
-- once for all its boxes (their pixels come from image_payloads.sql).
SELECT a.id, a.image_id, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h
FROM annotations a
WHERE a.id = ANY (%(ids)s::bigint[])
ORDER BY a.image_id, a.id;
