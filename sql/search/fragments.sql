-- The pieces a search statement is built from (visearch.search.statements): psycopg.sql
-- templates, one per `-- name:` block; %(name)s are bound parameters, {braces} are filled in.
-- Only the fragments a request uses go into its statement, so the planner sees exactly the
-- filters there are (and `--show-sql` prints a statement a person can read).
--
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
