-- What a result table shows of each image in %(ids)s (bigint[]): dataset, file, size.
SELECT i.id, d.name, i.file_name, i.width, i.height, i.created_at
FROM images i
JOIN datasets d ON d.id = i.dataset_id
WHERE i.id = ANY (%(ids)s::bigint[]);
