-- Collections of one owner with their item and image counts, newest first.
--   %(owner)s   text
--   %(id)s      bigint or NULL (all of the owner's)
--   %(saved)s   boolean or NULL (both kinds)
SELECT c.id, c.owner, c.name, c.saved, c.mode, c.model, c.query, c.exact, c.candidates, c.note,
       c.histogram, c.created_at, c.saved_at,
       (SELECT count(*) FROM collection_items ci WHERE ci.collection_id = c.id) AS items,
       (SELECT count(DISTINCT ci.image_id) FROM collection_items ci WHERE ci.collection_id = c.id) AS images
FROM collections c
WHERE c.owner = %(owner)s
  AND (%(id)s::bigint IS NULL OR c.id = %(id)s::bigint)
  AND (%(saved)s::boolean IS NULL OR c.saved = %(saved)s::boolean)
ORDER BY c.created_at DESC, c.id DESC;
