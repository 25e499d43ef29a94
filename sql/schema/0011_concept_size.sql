-- The search's concept driver size as a function (Alembic revision 0011), used by
-- sql/search/context.sql.
--
-- The smallest of the required concepts, in items of the kind (images: an upper bound, boxes
-- and labels of one image counted apart), each counted from annotations_concept /
-- image_labels_concept up to cap + 1, never further; NULL when no concept is required. It was a
-- LATERAL subquery over unnest(concepts) in context.sql; Citus cannot plan a subquery over a
-- distributed table correlated with an array of the outer query, while this function's
-- statements are plain ones it runs on the shards (`visearch db distribute`).
CREATE FUNCTION concept_driver_size(kind text, concepts bigint[], cap integer) RETURNS bigint
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    concept bigint;
    n bigint;
    smallest bigint;
BEGIN
    FOREACH concept IN ARRAY coalesce(concepts, '{}') LOOP
        IF kind = 'image' THEN
            n := (SELECT count(*) FROM (SELECT DISTINCT a.image_id FROM annotations a
                                        WHERE a.concept_id = concept LIMIT cap + 1) s)
               + (SELECT count(*) FROM (SELECT 1 FROM image_labels l
                                        WHERE l.concept_id = concept LIMIT cap + 1) s);
        ELSE
            n := (SELECT count(*) FROM (SELECT 1 FROM annotations a
                                        WHERE a.concept_id = concept LIMIT cap + 1) s);
        END IF;
        smallest := least(smallest, n);  -- least() ignores the first NULL
    END LOOP;
    RETURN smallest;
END $$;
