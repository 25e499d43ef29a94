-- The SQL of a search, one `-- name: X` block per statement or piece (loaded by
-- visearch.resources.sql_blocks; composed by visearch.search.statements with psycopg.sql).
-- In a block, %(name)s are bound parameters and {braces} are filled in by the composer;
-- comment lines and blank lines are left out of the text sent, so comments may mention the
-- {placeholders}. `visearch search --show-sql` prints a composed statement, runnable in psql.
--
-- Statements:
--   rank_images, rank_objects   the search itself: candidates ranked by cosine distance
--   score_histogram             the score distribution of a search's candidates
--   concept_centroid            the query vector of a search made only of #concepts
--   candidates                  every item passing a search's filters, unranked (curation)
-- and the fragments they are composed from (sources, filters, distances), further down.


-- name: rank_images
-- Images ranked by cosine similarity to a query vector: the search itself, one statement.
--   {ranked}    the top `limit` image ids and distances (the `ranked` block below), filled with:
--   {source}    where the rows come from, `e` being image_embeddings (a source fragment):
--               all of the model's vectors (HNSW or exact scan), or driven by a selective
--               filter's own index (a concept's boxes and labels, a dataset's images)
--   {distance}  e.embedding::vector(<dim>) <=> %(query)s::vector(<dim>)  served by the HNSW index
--               e.embedding <=> %(query)s::vector                        exact (no index matches)
--   {filters}   the request's other filters, each a filter fragment below, ANDed
-- Similarity (score) = 1 - cosine distance. max_score becomes a lower bound on distance inside
-- the scan (an iterative HNSW scan keeps going past too-similar rows). min_score and offset are
-- applied by the caller to these rows (best first), so it can tell an index that under-filled
-- (then it runs the exact form) from a score range that cut the list short.
WITH ranked AS MATERIALIZED (
{ranked}
)
SELECT r.image_id, 1 - r.distance AS score, i.dataset_id, d.name AS dataset, i.file_name,
       i.width, i.height, i.source_uri, i.external_id
FROM ranked r
JOIN images i ON i.id = r.image_id
JOIN datasets d ON d.id = i.dataset_id
-- an iterative scan (relaxed_order) may return rows slightly out of order: sort what came back
ORDER BY r.distance, r.image_id

-- name: rank_objects
-- Objects (annotation boxes) ranked by cosine similarity to a query vector, one statement.
-- Template as rank_images; `e` is object_embeddings and {source} also joins the box as `a`.
WITH ranked AS MATERIALIZED (
{ranked}
)
SELECT r.annotation_id, 1 - r.distance AS score, a.image_id, i.dataset_id, d.name AS dataset,
       i.file_name, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h, k.name AS concept, a.iscrowd,
       a.source, a.score AS annotation_score
FROM ranked r
JOIN annotations a ON a.id = r.annotation_id
JOIN images i ON i.id = a.image_id
JOIN datasets d ON d.id = i.dataset_id
LEFT JOIN concepts k ON k.id = a.concept_id
ORDER BY r.distance, r.annotation_id

-- name: ranked
-- The ranking both rank_images and rank_objects wrap: {item} (e.image_id or e.annotation_id)
-- and its distance, best first, `limit` rows (placeholders as in rank_images).
    SELECT {item}, {distance} AS distance
    FROM {source}
    WHERE e.model_id = %(model_id)s
      AND {filters}
    ORDER BY {distance}
    LIMIT %(limit)s

-- name: score_histogram
-- The score distribution of a search: how its candidates spread over %(bins)s equal-width bins
-- between the lowest and the highest score observed, filled with the search's own resolved
-- {source} and {filters}, i.e. the very set
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

-- name: concept_centroid
-- The query of a search made only of #concepts: the centroid of the items carrying them
-- (within the filters), renormalised to unit length ({source}, {filters} and {dim} as in
-- rank_images); `e` is the vector table.
-- Each image weighs the same: its items' unit vectors are averaged (and renormalised) per image
-- first, then the images' means are averaged, so a photo with twenty bottles counts once. For
-- objects, boxes smaller than %(min_box_area)s px² are left out by {filters} (the caller retries
-- without that bound when it leaves nothing).
SELECT l2_normalize(avg(per_image.mean)), sum(per_image.items)::bigint
FROM (
    SELECT l2_normalize(avg(e.embedding::vector({dim}))) AS mean, count(*) AS items
    FROM {source}
    WHERE e.model_id = %(model_id)s
      AND {filters}
    GROUP BY {image_id}
) AS per_image

-- name: candidates
-- Every item that passes a search's filters, unranked: one row (item_id, image_id, embedding)
-- per image (image_id twice) or box. Curation reads it (diverse samples cluster these vectors;
-- visearch.curation.search_seam). {source} and {filters} are the search's own fragments
-- (composed by visearch.search.statements.Shape.candidates), so a sample sees exactly the
-- items a search with the same filters may return.
SELECT {item_id} AS item_id, {image_id} AS image_id, e.embedding
FROM {source}
WHERE e.model_id = %(model_id)s
  AND {filters}

-- ---- Fragments --------------------------------------------------------------------------------
-- Sources: where the ranked rows come from. `e` is the vector table, `i` the image, `a` the box.
-- An `_all` source reads the model's vectors in index order (HNSW) or all of them (exact);
-- a `_by_` source starts from a selective filter's own index and ranks its rows exactly.

-- name: image_all
image_embeddings e{sample}

-- name: image_all_with_image
image_embeddings e{sample}
JOIN images i ON i.id = e.image_id

-- name: image_by_concept
(SELECT t.image_id
 FROM (SELECT a.image_id, a.concept_id FROM annotations a
       WHERE a.concept_id = ANY (%(concept_ids)s::bigint[])
       UNION
       SELECT l.image_id, l.concept_id FROM image_labels l
       WHERE l.concept_id = ANY (%(concept_ids)s::bigint[])) AS t
 GROUP BY t.image_id
 HAVING count(*) = cardinality(%(concept_ids)s::bigint[])) AS tagged
JOIN image_embeddings e ON e.image_id = tagged.image_id{image}

-- name: image_by_one_concept
(SELECT a.image_id FROM annotations a WHERE a.concept_id = ANY (%(concept_ids)s::bigint[])
 UNION
 SELECT l.image_id FROM image_labels l WHERE l.concept_id = ANY (%(concept_ids)s::bigint[])) AS tagged
JOIN image_embeddings e ON e.image_id = tagged.image_id{image}

-- name: join_image
JOIN images i ON i.id = e.image_id

-- name: join_box_image
JOIN images i ON i.id = a.image_id

-- name: image_by_dataset
images i
JOIN image_embeddings e ON e.image_id = i.id

-- name: object_all
object_embeddings e{sample}

-- name: object_all_with_box
object_embeddings e{sample}
JOIN annotations a ON a.id = e.annotation_id AND a.image_id = e.image_id
JOIN images i ON i.id = a.image_id

-- name: object_by_concept
annotations a
JOIN object_embeddings e ON e.annotation_id = a.id AND e.image_id = a.image_id{image}

-- name: object_by_dataset
images i
JOIN annotations a ON a.image_id = i.id
JOIN object_embeddings e ON e.annotation_id = a.id AND e.image_id = a.image_id

-- name: sample
 TABLESAMPLE BERNOULLI (%(sample_percent)s)

-- Filters, ANDed into the WHERE clause. Under an HNSW scan each is checked per row read from the
-- index, by the primary key or the filter's own index (a probe per row: an HNSW scan reads about
-- rows / selectivity of them, fewer than the filter holds, else the filter would drive). The
-- one-concept test is one EXISTS over a UNION ALL so that PostgreSQL keeps it a per-row probe
-- (two ORed EXISTS become hashed subplans that first read every item of the concept).

-- name: in_datasets
i.dataset_id = ANY (%(dataset_ids)s::bigint[])

-- name: image_shows_concept
EXISTS (SELECT 1 FROM image_labels l WHERE l.image_id = {image_id} AND l.concept_id = ANY (%(concept_ids)s::bigint[])
        UNION ALL
        SELECT 1 FROM annotations x WHERE x.image_id = {image_id} AND x.concept_id = ANY (%(concept_ids)s::bigint[]))

-- name: image_shows_concepts
%(concept_ids)s::bigint[] <@ ARRAY(
    SELECT x.concept_id FROM annotations x
    WHERE x.image_id = {image_id} AND x.concept_id = ANY (%(concept_ids)s::bigint[])
    UNION ALL
    SELECT l.concept_id FROM image_labels l
    WHERE l.image_id = {image_id} AND l.concept_id = ANY (%(concept_ids)s::bigint[]))

-- name: box_concept
a.concept_id = ANY (%(concept_ids)s::bigint[])

-- name: image_shows_none
NOT EXISTS (SELECT 1 FROM annotations x
            WHERE x.image_id = {image_id} AND x.concept_id = ANY (%(exclude_concept_ids)s::bigint[]))
AND NOT EXISTS (SELECT 1 FROM image_labels l
                WHERE l.image_id = {image_id} AND l.concept_id = ANY (%(exclude_concept_ids)s::bigint[]))

-- name: box_not_excluded
(a.concept_id IS NULL OR a.concept_id <> ALL (%(exclude_concept_ids)s::bigint[]))

-- name: metadata
i.metadata @> %(metadata)s::jsonb

-- name: created_from
i.created_at >= %(created_from)s::timestamptz

-- name: created_to
i.created_at < %(created_to)s::timestamptz

-- name: min_distance
{distance} >= %(min_distance)s::float8

-- name: is_query_image
e.image_id = ANY (%(query_image_ids)s::bigint[])

-- name: is_query_box
e.annotation_id = %(query_annotation_id)s::bigint

-- name: not_query_images
e.image_id <> ALL (%(query_image_ids)s::bigint[])

-- name: not_query_box
e.annotation_id <> %(query_annotation_id)s::bigint

-- name: min_box_area
a.bbox_w * a.bbox_h >= %(min_box_area)s::float8

-- The distance, exact or in the form the model's partial HNSW index is built on (0001_hnsw.sql).

-- {query} is the query vector: the bound parameter %(query)s (text, an upload, several stored
-- images averaged, a concept centroid), or for a search by one stored item the item's own vector
-- read by the statement itself (stored_image_query / stored_box_query: an InitPlan, computed
-- once; the HNSW index still serves the ORDER BY, as pgvector documents for a subquery).

-- name: distance_exact
(e.embedding <=> {query}::vector)

-- name: distance_hnsw
(e.embedding::vector({dim}) <=> {query}::vector({dim}))

-- name: query_param
%(query)s

-- name: stored_image_query
(SELECT l2_normalize(q.embedding) FROM image_embeddings q
 WHERE q.model_id = %(model_id)s AND q.image_id = (%(query_image_ids)s::bigint[])[1])

-- name: stored_box_query
(SELECT l2_normalize(q.embedding) FROM object_embeddings q
 WHERE q.model_id = %(model_id)s AND q.annotation_id = %(query_annotation_id)s::bigint)
