-- Delete images by id (their bytes, labels, captions, boxes, vectors, queue rows and
-- collection items go with them: ON DELETE CASCADE). Returns the ids really deleted.
DELETE FROM images WHERE id = ANY(%(image_ids)s::bigint[]) RETURNING id;
