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
