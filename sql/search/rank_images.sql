-- Images ranked by cosine similarity to a query vector: the search itself, one statement.
-- Placeholders in <angle brackets> are filled in by visearch.search.service before it runs.
-- <candidates> is image_candidates.sql (flattened by the planner). <distance> is either
--   c.embedding::vector(<dim>) <=> %(query)s::vector(<dim>)   approximate, via the model's HNSW index
--   c.embedding <=> %(query)s::vector                         exact (no index has this expression)
-- Similarity (score) = 1 - cosine distance. max_score becomes a lower bound on distance inside
-- the scan (with iterative scans the index keeps going past too-similar rows). min_score and
-- offset are applied by the caller to these rows: rows come best-first, so that keeps the same
-- rows as filtering first, and the caller can tell an index that under-filled (then it runs
-- the statement exactly) from a score range that cut the list short.
WITH ranked AS MATERIALIZED (
    SELECT c.image_id, {distance} AS distance
    FROM ({candidates}) AS c
    WHERE (%(min_distance)s::float8 IS NULL OR {distance} >= %(min_distance)s::float8)
    ORDER BY {distance}
    LIMIT %(limit)s
)
SELECT r.image_id, 1 - r.distance AS score, i.dataset_id, d.name AS dataset, i.file_name,
       i.width, i.height, i.source_uri, i.external_id
FROM ranked r
JOIN images i ON i.id = r.image_id
JOIN datasets d ON d.id = i.dataset_id
-- relaxed_order iterative scans may return rows slightly out of order: sort what came back
ORDER BY r.distance, r.image_id;
