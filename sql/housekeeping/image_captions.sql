-- The captions of image %(image_id)s, oldest first; one row of NULLs when it has none, and no
-- row at all when the image does not exist (the caller's 404).
SELECT c.id, c.text, c.source
FROM images i
LEFT JOIN captions c ON c.image_id = i.id
WHERE i.id = %(image_id)s
ORDER BY c.id;
