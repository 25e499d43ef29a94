-- Images ranked by cosine similarity to a query vector: the search itself, one statement.
-- A psycopg.sql template (visearch.search.statements fills the {braces}); %(name)s are bound
-- parameters. `visearch search --show-sql` prints it rendered, runnable in psql.
--   {source}    where the rows come from, `e` being image_embeddings (fragments.sql):
--               all of the model's vectors (HNSW or exact scan), or driven by a selective
--               filter's own index (a concept's boxes and labels, a dataset's images)
--   {distance}  e.embedding::vector(<dim>) <=> %(query)s::vector(<dim>)  served by the HNSW index
--               e.embedding <=> %(query)s::vector                        exact (no index matches)
--   {filters}   the request's other filters, each a fragment of fragments.sql, ANDed
-- Similarity (score) = 1 - cosine distance. max_score becomes a lower bound on distance inside
-- the scan (an iterative HNSW scan keeps going past too-similar rows). min_score and offset are
-- applied by the caller to these rows (best first), so it can tell an index that under-filled
-- (then it runs the exact form) from a score range that cut the list short.
WITH ranked AS MATERIALIZED (
    SELECT e.image_id, {distance} AS distance
    FROM {source}
    WHERE e.model_id = %(model_id)s
      AND {filters}
    ORDER BY {distance}
    LIMIT %(limit)s
)
SELECT r.image_id, 1 - r.distance AS score, i.dataset_id, d.name AS dataset, i.file_name,
       i.width, i.height, i.source_uri, i.external_id
FROM ranked r
JOIN images i ON i.id = r.image_id
JOIN datasets d ON d.id = i.dataset_id
-- an iterative scan (relaxed_order) may return rows slightly out of order: sort what came back
ORDER BY r.distance, r.image_id
