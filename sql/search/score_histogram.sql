-- The score distribution of a search: how its candidates spread over %(bins)s equal-width bins
-- between the lowest and the highest score observed. A psycopg.sql template filled with the
-- search's own resolved {source} and {filters} (visearch.search.statements), i.e. the very set
-- the search ranks, less the query's own items ({is_query}: a stored image scores 1.0 against
-- itself and would stretch the range; `query_items` says how many of them were among the
-- candidates); the score range and the limit are NOT applied, so the histogram
-- shows where a min_score/max_score would cut. Scores are exact cosine similarities,
-- 1 - (<=> distance). On a large vector table the source carries TABLESAMPLE BERNOULLI
-- (%(sample_percent)s): each row is kept with that probability; `considered` says how
-- many candidates were scored.
--
-- One row: lo, hi (observed score range; NULL when nothing was considered), considered,
-- query_items and counts (bigint[%(bins)s], bin k covering [lo + (k-1)w, lo + kw), the last one closed at hi,
-- w = (hi - lo) / bins). sum(counts) = considered. When lo = hi, everything is in bin 1.
WITH scored AS MATERIALIZED (
    SELECT 1 - {distance} AS score, {is_query} AS is_query
    FROM {source}
    WHERE e.model_id = %(model_id)s
      AND {filters}
),
bounds AS (
    SELECT min(score) FILTER (WHERE NOT is_query) AS lo, max(score) FILTER (WHERE NOT is_query) AS hi,
           count(*) FILTER (WHERE NOT is_query) AS considered, count(*) FILTER (WHERE is_query) AS query_items
    FROM scored
),
binned AS (
    SELECT CASE WHEN b.hi > b.lo
                -- width_bucket puts hi itself in bin bins + 1: close the last bin instead
                THEN least(width_bucket(s.score, b.lo, b.hi, %(bins)s::int), %(bins)s::int)
                ELSE 1 END AS bin,
           count(*) AS n
    FROM scored s CROSS JOIN bounds b
    WHERE NOT s.is_query
    GROUP BY 1
)
SELECT b.lo, b.hi, b.considered,
       ARRAY(SELECT coalesce(x.n, 0)
             FROM generate_series(1, %(bins)s::int) AS g (bin)
             LEFT JOIN binned x ON x.bin = g.bin
             ORDER BY g.bin) AS counts,
       b.query_items
FROM bounds b;
