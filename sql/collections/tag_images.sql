-- Label images %(image_ids)s (bigint[]: a collection's images, visearch.collections.service
-- tag_images) with each concept %(concept_ids)s (image_labels.source = %(source)s); labels
-- already there are left alone. Images deleted meanwhile are not selected; one deleted by a
-- transaction that commits while this statement runs makes the foreign key check fail (it
-- waits for that transaction first): the caller rolls back to its savepoint and runs it again,
-- and the image is then gone. (No FOR KEY SHARE on the images first: Citus refuses row locks
-- in a statement over several shards, and the foreign key check takes the same lock.)
-- Returns: the number of labels added (the statement's row count).
INSERT INTO image_labels (image_id, concept_id, source)
SELECT i.id, k.concept_id, %(source)s
FROM images i
CROSS JOIN unnest(%(concept_ids)s::bigint[]) AS k (concept_id)
WHERE i.id = ANY (%(image_ids)s::bigint[])
ON CONFLICT (image_id, concept_id, source) DO NOTHING;
