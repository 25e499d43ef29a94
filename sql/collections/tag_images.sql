-- Label every image of a collection with each concept (image_labels.source = %(source)s);
-- labels already there are left alone; %(image_ids)s (bigint[] or NULL): only those of its
-- images. Images deleted meanwhile (even by a transaction that
-- commits while this runs) are skipped and reported: the images still there are locked
-- (FOR KEY SHARE, what the foreign key check takes anyway) before their labels go in, so a
-- concurrent delete either waits for this statement or is seen as gone by it.
-- Returns: images listed, images tagged, labels added, ids of the images gone.
WITH listed AS (
    SELECT DISTINCT image_id FROM collection_items
    WHERE collection_id = %(collection_id)s
      AND (%(image_ids)s::bigint[] IS NULL OR image_id = ANY (%(image_ids)s::bigint[]))
),
present AS (
    SELECT i.id
    FROM images i
    JOIN listed l ON l.image_id = i.id
    FOR KEY SHARE OF i
),
added AS (
    INSERT INTO image_labels (image_id, concept_id, source)
    SELECT p.id, k.concept_id, %(source)s
    FROM present p
    CROSS JOIN unnest(%(concept_ids)s::bigint[]) AS k (concept_id)
    ON CONFLICT (image_id, concept_id, source) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM listed) AS listed,
       (SELECT count(*) FROM present) AS tagged,
       (SELECT count(*) FROM added) AS labels_added,
       coalesce((SELECT array_agg(image_id ORDER BY image_id) FROM listed
                 WHERE image_id NOT IN (SELECT id FROM present)), '{}') AS gone;
