-- Images whose file name or external id (e.g. the COCO image id) is %(term)s, or starts with
-- it when %(prefix)s; optionally in one dataset (%(dataset_id)s bigint or NULL). Exact matches
-- first, then by file name. Served by images_file_name_pattern / images_external_id_pattern
-- (text_pattern_ops, revision 0010): each branch is an index scan.
WITH hits AS (
    SELECT id FROM images
    WHERE CASE WHEN %(prefix)s THEN file_name LIKE %(pattern)s ELSE file_name = %(term)s END
    UNION
    SELECT id FROM images
    WHERE CASE WHEN %(prefix)s THEN external_id LIKE %(pattern)s ELSE external_id = %(term)s END
)
SELECT i.id, i.dataset_id, d.name AS dataset, i.file_name, i.external_id, i.width, i.height,
       i.source_uri, i.created_at
FROM hits h
JOIN images i ON i.id = h.id
JOIN datasets d ON d.id = i.dataset_id
WHERE %(dataset_id)s::bigint IS NULL OR i.dataset_id = %(dataset_id)s::bigint
ORDER BY (i.file_name = %(term)s OR i.external_id = %(term)s) DESC, i.file_name, i.id
LIMIT %(limit)s;
