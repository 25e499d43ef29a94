-- Collections of one owner with their item and image counts, newest first.
--   %(owner)s   text
--   %(id)s      bigint or NULL (all of the owner's)
--   %(saved)s   boolean or NULL (both kinds)
SELECT c.id, c.owner, c.name, c.saved, c.mode, c.model, c.query, c.exact, c.candidates, c.note,
       c.histogram, c.created_at, c.saved_at,
       coalesce(n.items, 0) AS items, coalesce(n.images, 0) AS images
FROM collections c
-- counted per collection in one grouped join, not a correlated subquery per row (Citus cannot
-- send one from a reference table to the distributed collection_items)
LEFT JOIN (
    SELECT ci.collection_id, count(*) AS items, count(DISTINCT ci.image_id) AS images
    FROM collection_items ci
    WHERE ci.collection_id IN (SELECT o.id FROM collections o WHERE o.owner = %(owner)s
                               AND (%(id)s::bigint IS NULL OR o.id = %(id)s::bigint))
    GROUP BY ci.collection_id
) n ON n.collection_id = c.id
WHERE c.owner = %(owner)s
  AND (%(id)s::bigint IS NULL OR c.id = %(id)s::bigint)
  AND (%(saved)s::boolean IS NULL OR c.saved = %(saved)s::boolean)
ORDER BY c.created_at DESC, c.id DESC;
