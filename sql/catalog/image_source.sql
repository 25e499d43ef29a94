-- Where an image's pixels are: its stored bytes (NULL when ingested by reference) or its
-- source URI, with its format and stored (post-EXIF) size.
SELECT i.id, i.format, i.width, i.height, i.source_uri, c.content, encode(i.sha256, 'hex') AS sha256
FROM images i
LEFT JOIN image_content c ON c.image_id = i.id
WHERE i.id = %(image_id)s;
