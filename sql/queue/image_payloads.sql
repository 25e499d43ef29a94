-- What the embedder needs for images %(ids)s: the stored bytes, or where to read them.
SELECT i.id, c.content, i.source_uri
FROM images i
LEFT JOIN image_content c ON c.image_id = i.id
WHERE i.id = ANY (%(ids)s::bigint[]);
