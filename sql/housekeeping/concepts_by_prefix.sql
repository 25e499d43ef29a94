-- Concepts whose tag starts with %(pattern)s (already escaped for LIKE, ending in '%%'), most
-- used first: for `#concept` autocomplete. Uses concepts_tag_pattern (revision 0010). Counts:
-- images labelled with it, boxes of it.
SELECT id, name, tag, images, boxes
FROM (
    SELECT k.id, k.name, k.tag,
           (SELECT count(DISTINCT l.image_id) FROM image_labels l WHERE l.concept_id = k.id) AS images,
           (SELECT count(*) FROM annotations a WHERE a.concept_id = k.id) AS boxes
    FROM concepts k
    WHERE k.tag LIKE %(pattern)s
) AS found
ORDER BY images + boxes DESC, tag
LIMIT %(limit)s;
