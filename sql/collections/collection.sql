-- A collection as a search keeps it and a client reads it (visearch.collections.service):
-- one `-- name: X` block per statement (visearch.resources.sql_blocks). A search runs all three:
-- insert_search keeps its ranking, select_collections and items_page read back the collection
-- and its first page; the other collection operations read through the last two.


-- name: insert_search
-- A search kept as a collection, in one statement: the collection row (temporary unless
-- %(name)s is given) and its ranked items (arrays of equal length, rank 1 = best; empty arrays:
-- no items). The caller has already deleted the owner's previous temporary collection in the
-- same transaction, under the owner's lock.
WITH kept AS (
    INSERT INTO collections (owner, name, saved, saved_at, mode, model, query, exact, candidates, note, histogram)
    VALUES (%(owner)s, %(name)s, %(name)s::text IS NOT NULL,
            CASE WHEN %(name)s::text IS NOT NULL THEN now() END,
            %(mode)s, %(model)s, %(query)s, %(exact)s, %(candidates)s, %(note)s, %(histogram)s)
    RETURNING id
), ranked AS (
    INSERT INTO collection_items (collection_id, rank, image_id, annotation_id, score)
    SELECT kept.id, t.rank, t.image_id, t.annotation_id, t.score
    FROM kept, unnest(%(ranks)s::int[], %(image_ids)s::bigint[], %(annotation_ids)s::bigint[],
                      %(scores)s::float8[]) AS t (rank, image_id, annotation_id, score)
)
SELECT id FROM kept;

-- name: select_collections
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

-- name: items_page
-- One page of a collection's items in rank order, with what a client shows for each: the
-- image (dataset, file, size) and, for objects, the box (COCO [x, y, w, h] pixels) and concept.
-- Ranks are frozen at search time, so the same offset always gives the same items (items whose
-- image or box was deleted since are gone; the others keep their order).
-- The page is cut from collection_items first, then joined by image id: on Citus the items are
-- distributed on the collection id and the images on their id, and a join of the two is
-- refused, while the page's few rows join each image's shard.
WITH page AS MATERIALIZED (
    SELECT ci.rank, ci.score, ci.image_id, ci.annotation_id
    FROM collection_items ci
    WHERE ci.collection_id = %(collection_id)s
    ORDER BY ci.rank
    OFFSET %(offset)s
    LIMIT %(limit)s
)
SELECT p.rank, p.score::float8 AS score, p.image_id, p.annotation_id,
       d.name AS dataset, i.file_name, i.width, i.height, i.external_id,
       CASE WHEN a.id IS NOT NULL THEN ARRAY[a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h]::float8[] END AS bbox_xywh,
       k.name AS concept, a.iscrowd
FROM page p
JOIN images i ON i.id = p.image_id
JOIN datasets d ON d.id = i.dataset_id
LEFT JOIN annotations a ON a.id = p.annotation_id AND a.image_id = i.id
LEFT JOIN concepts k ON k.id = a.concept_id
ORDER BY p.rank;
