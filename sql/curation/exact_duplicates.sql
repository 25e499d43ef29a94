-- Byte-identical images: the same sha256 more than once, across all datasets, for the images of
-- dataset %(dataset_id)s (within one dataset an image is unique by sha256, so these are copies in
-- other datasets). One row per image, grouped by sha256 (hex), oldest first.
SELECT encode(i.sha256, 'hex') AS sha256, i.id AS image_id, d.name AS dataset, i.file_name,
       i.width, i.height, i.created_at
FROM images i JOIN datasets d ON d.id = i.dataset_id
WHERE i.sha256 IN (
    SELECT x.sha256 FROM images x WHERE x.dataset_id = %(dataset_id)s
    INTERSECT
    SELECT y.sha256 FROM images y GROUP BY y.sha256 HAVING count(*) > 1)
ORDER BY i.sha256, i.created_at, i.id;
