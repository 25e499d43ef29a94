-- The query for a search made only of #concepts: the mean of the unit vectors of the
-- candidates (objects or images carrying the concepts), renormalised to unit length.
-- <candidates> is image_candidates.sql or object_candidates.sql.
SELECT l2_normalize(avg(c.embedding::vector({dim}))), count(*)
FROM ({candidates}) AS c;
