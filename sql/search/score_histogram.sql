-- The score distribution of a search: how its candidates spread over %(bins)s equal-width bins
-- between the lowest and the highest score observed. Placeholders as in rank_images.sql:
-- <candidates> is image_candidates.sql or object_candidates.sql with the search's own filter
-- parameters, i.e. the very set the search counts as its `candidates` (the score range and
-- the limit are NOT applied: the histogram shows where a min_score/max_score would cut).
-- Scores are exact cosine similarities, 1 - (<=> distance), computed for every candidate
-- (no index), unless %(sample)s < 1: then each candidate is kept with that probability (a
-- Bernoulli sample, for very large candidate sets) and `considered` says how many were.
--
-- One row: lo, hi (observed score range; NULL when nothing was considered), considered, and
-- counts (bigint[%(bins)s], bin k covering [lo + (k-1)w, lo + kw), the last one closed at hi,
-- w = (hi - lo) / bins). sum(counts) = considered. When lo = hi, everything is in bin 1.
WITH scored AS MATERIALIZED (
    SELECT 1 - (c.embedding <=> %(query)s::vector) AS score
    FROM ({candidates}) AS c
    WHERE %(sample)s::float8 >= 1 OR random() < %(sample)s::float8
),
bounds AS (
    SELECT min(score) AS lo, max(score) AS hi, count(*) AS considered
    FROM scored
),
binned AS (
    SELECT CASE WHEN b.hi > b.lo
                -- width_bucket puts hi itself in bin bins + 1: close the last bin instead
                THEN least(width_bucket(s.score, b.lo, b.hi, %(bins)s::int), %(bins)s::int)
                ELSE 1 END AS bin,
           count(*) AS n
    FROM scored s CROSS JOIN bounds b
    GROUP BY 1
)
SELECT b.lo, b.hi, b.considered,
       ARRAY(SELECT coalesce(x.n, 0)
             FROM generate_series(1, %(bins)s::int) AS g (bin)
             LEFT JOIN binned x ON x.bin = g.bin
             ORDER BY g.bin) AS counts
FROM bounds b;
