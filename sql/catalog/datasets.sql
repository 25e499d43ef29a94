-- Datasets with their sizes, ordered by id; %(id)s bigint or NULL, %(name)s text or NULL
-- (both NULL: all). Columns are the fields of visearch.admin.DatasetInfo.
SELECT d.id, d.name, d.description, d.search_enabled, d.metadata, d.created_at,
       (SELECT count(*) FROM images i WHERE i.dataset_id = d.id) AS images,
       (SELECT count(*) FROM annotations a JOIN images i ON i.id = a.image_id
        WHERE i.dataset_id = d.id) AS annotations
FROM datasets d
WHERE (%(id)s::bigint IS NULL OR d.id = %(id)s::bigint)
  AND (%(name)s::text IS NULL OR d.name = %(name)s::text)
ORDER BY d.id;
