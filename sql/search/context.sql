-- Everything a search needs to know before it ranks, in one round trip (visearch.search.service):
-- the names resolved to ids, the model that answers, whether its vectors are complete, whether
-- its HNSW index exists, and how big the filter that would drive an exact ranking is.
--
--   %(model_name)s      text or NULL   the model the request names; NULL = the serving model
--   %(fallback_model)s  text           Settings.model: used when no active model qualifies
--   %(needs_text)s      boolean        free-text query: only models with a text tower serve it
--   %(kind)s            text           'image' | 'object'
--   %(dataset_names)s   text[] or NULL the datasets named (NULL = every enabled dataset)
--   %(concept_terms)s   text[]         required concepts as typed (without '#'), %(exclude_terms)s
--                                      excluded ones; concept_tag() makes them tags, as it made the
--                                      stored ones, and a term given twice counts once
--   %(cap)s             integer        Settings.exact_search_max_candidates: the most candidates
--                                      ever ranked exactly (see exact_cap below)
--   %(rows)s            integer        rows the ranking returns (limit + offset)
--   %(query_image_ids)s bigint[] or NULL  a search by stored images (their vectors: see the end)
--   %(query_annotation_id)s bigint or NULL  a search by a stored box
--
-- Serving model (when none is named): among active models (text-capable ones for a text query),
-- the most recently activated one that COVERS the searched datasets, i.e. has no stale item
-- there (a queue row that is not failed: waiting, being embedded or retrying). Items given up
-- on (failed) do not block coverage. Covering is an EXISTS probe per model; only when no model
-- covers the datasets (while embedding runs) are stale items counted, to take the model with
-- the fewest. So a new model embeds in the background while the previous one serves.
--
-- Unknown names come back as NULL in the id arrays (and model_id NULL): the caller raises the
-- error with its hints (those extra queries only run on the error path).
WITH
ds AS (
    SELECT d.id, d.name, d.search_enabled
    FROM datasets d
    WHERE d.name = ANY (%(dataset_names)s::text[])
),
searched AS (  -- the datasets a search covers: the named ones, else every enabled one
    SELECT d.id FROM datasets d
    WHERE d.search_enabled
      AND (%(dataset_names)s::text[] IS NULL OR d.name = ANY (%(dataset_names)s::text[]))
),
candidate_models AS (
    SELECT m.id, m.name, m.dim, m.embeds_text, m.is_active, m.activated_at,
           EXISTS (SELECT 1 FROM embedding_queue q
                   WHERE q.model_id = m.id AND NOT q.failed
                     AND q.dataset_id IN (SELECT id FROM searched)) AS has_stale
    FROM embedding_models m
    WHERE %(model_name)s::text IS NULL AND m.is_active
      AND (m.embeds_text OR NOT %(needs_text)s::boolean)
),
model AS (
    SELECT id, name, dim, embeds_text, is_active
    FROM (
        SELECT m.id, m.name, m.dim, m.embeds_text, m.is_active, 0 AS pref, 0::bigint AS stale,
               NULL::timestamptz AS activated_at
        FROM embedding_models m WHERE m.name = %(model_name)s::text
        UNION ALL
        SELECT c.id, c.name, c.dim, c.embeds_text, c.is_active, 1,
               -- counted only for a model that does not cover the datasets (CASE is lazy)
               CASE WHEN c.has_stale THEN
                   (SELECT count(*) FROM embedding_queue q
                    WHERE q.model_id = c.id AND NOT q.failed
                      AND q.dataset_id IN (SELECT id FROM searched))
               ELSE 0 END,
               c.activated_at
        FROM candidate_models c
        UNION ALL
        SELECT m.id, m.name, m.dim, m.embeds_text, m.is_active, 2, 0, NULL
        FROM embedding_models m
        WHERE %(model_name)s::text IS NULL AND m.name = %(fallback_model)s::text
    ) options
    ORDER BY pref, stale, activated_at DESC NULLS LAST, id DESC
    LIMIT 1
),
concept_ids AS (
    SELECT array_agg(k.id ORDER BY t.ord) AS required,
           count(k.id) = count(*) AS all_found
    FROM (SELECT concept_tag(u.term) AS tag, min(u.ord) AS ord
          FROM unnest(%(concept_terms)s::text[]) WITH ORDINALITY AS u (term, ord)
          GROUP BY 1) AS t
    LEFT JOIN concepts k ON k.tag = t.tag
),
-- Exact or HNSW: a selective filter drives the ranking from its own index and ranks its n items
-- exactly (cost ~ n); otherwise pgvector's HNSW iterative scan reads the model's index until
-- `rows` items pass the filter, about rows / s index tuples at selectivity s = n / N, each
-- costing a few distance computations on the graph (cost ~ rows * N / n). The two meet at
-- n = c * sqrt(rows * N); c = 4 was measured at 100k x 1280-d (bench/bench_search.py: exact
-- 1,000 items (a 1 in 100 filter) 18 ms vs HNSW 62 ms at recall 0.97; 10,000 items 129 ms vs 47 ms).
-- N is the model's HNSW index size (pg_class.reltuples, kept by CREATE INDEX, VACUUM and
-- ANALYZE; unknown before the first of these: then %(cap)s). Never above %(cap)s. The driver
-- concept size below is counted up to exact_cap + 1, the named datasets' size up to %(cap)s + 1
-- (a LIMIT that reads exact_cap is a subquery in LIMIT, which Citus cannot distribute).
exact_cap AS MATERIALIZED (  -- also the model's HNSW index (NULL: none yet) and its size N,
    -- named and computed once here (inlined, each use of a column would repeat its lookups)
    SELECT least(%(cap)s, coalesce(ceil(4 * sqrt(greatest(%(rows)s, 1)::float8 * n.size))::integer,
                                   %(cap)s)) AS cap,
           h.hnsw_index, n.size
    FROM (SELECT to_regclass(hnsw_index_name(CASE %(kind)s WHEN 'image' THEN 'image_embeddings'
                                                           ELSE 'object_embeddings' END, m.id)) AS hnsw_index
          FROM (SELECT 1) one LEFT JOIN model m ON true OFFSET 0) h
    LEFT JOIN LATERAL (SELECT r.reltuples::float8 AS size FROM pg_class r
                       WHERE r.oid = h.hnsw_index AND r.reltuples > 0) n ON true
),
exclude_ids AS (
    SELECT array_agg(k.id ORDER BY t.ord) AS excluded,
           count(k.id) = count(*) AS all_found
    FROM (SELECT concept_tag(u.term) AS tag, min(u.ord) AS ord
          FROM unnest(%(exclude_terms)s::text[]) WITH ORDINALITY AS u (term, ord)
          GROUP BY 1) AS t
    LEFT JOIN concepts k ON k.tag = t.tag
)
SELECT
    m.id AS model_id, m.name AS model_name, m.dim, m.embeds_text, m.is_active,
    (SELECT array_agg(ds.id ORDER BY n.ord) FROM unnest(%(dataset_names)s::text[]) WITH ORDINALITY AS n (name, ord)
            LEFT JOIN ds ON ds.name = n.name) AS dataset_ids,
    (SELECT array_agg(ds.name) FROM ds WHERE NOT ds.search_enabled) AS disabled_datasets,
    NOT EXISTS (SELECT 1 FROM datasets d WHERE NOT d.search_enabled) AS all_enabled,
    (SELECT array_agg(id ORDER BY id) FROM searched) AS searched_ids,
    c.required AS concept_ids, c.all_found AS concepts_found,
    x.excluded AS exclude_concept_ids, x.all_found AS excludes_found,
    -- coverage of the searched datasets by this model, for items of this kind: two probes
    EXISTS (SELECT 1 FROM embedding_queue q
            WHERE q.model_id = m.id AND q.item_kind = %(kind)s AND NOT q.failed
              AND q.dataset_id IN (SELECT id FROM searched)) AS has_queued,
    EXISTS (SELECT 1 FROM embedding_queue q
            WHERE q.model_id = m.id AND q.item_kind = %(kind)s AND q.failed
              AND q.dataset_id IN (SELECT id FROM searched)) AS has_failed,
    k.hnsw_index IS NOT NULL AS has_index,
    -- the smallest required concept, in items of this kind, each counted up to exact_cap + 1
    -- (concept_driver_size(), sql/schema/0011_concept_size.sql)
    k.cap AS exact_cap,
    concept_driver_size(%(kind)s, c.required, k.cap) AS concept_size,
    -- the named datasets' items (images_dataset_external_id; boxes through their images), up to
    -- %(cap)s + 1
    CASE WHEN %(dataset_names)s::text[] IS NOT NULL THEN
        CASE %(kind)s
            WHEN 'image' THEN
                (SELECT count(*) FROM (SELECT 1 FROM images i WHERE i.dataset_id = ANY (ARRAY(SELECT id FROM ds))
                                       LIMIT %(cap)s + 1) s)
            ELSE
                (SELECT count(*) FROM (SELECT 1 FROM images i JOIN annotations a ON a.image_id = i.id
                                       WHERE i.dataset_id = ANY (ARRAY(SELECT id FROM ds)) LIMIT %(cap)s + 1) s)
        END
    END AS dataset_size,
    -- a search by stored items: how many of them have a vector for the model (fewer than the
    -- ids: unknown or not embedded, said by the caller). By one image or one box the ranking
    -- statement reads the vector itself (fragment stored_image_query / stored_box_query): it
    -- does not travel to the client and back. By several images their vectors come back here,
    -- for the caller to average, and on Citus always (Citus refuses a subquery in ORDER BY, so
    -- there the vector is bound as a parameter). The model id is an uncorrelated subquery, which
    -- Citus plans first (a correlated one joins the shards to the coordinator's queue table,
    -- which it refuses)
    current_setting('citus.version', true) IS NOT NULL AS on_citus,
    (SELECT count(*) FROM image_embeddings e
     WHERE e.model_id = (SELECT id FROM model) AND e.image_id = ANY (%(query_image_ids)s::bigint[])) AS query_images_found,
    (SELECT array_agg(e.embedding ORDER BY e.image_id) FROM image_embeddings e
     WHERE (cardinality(%(query_image_ids)s::bigint[]) > 1 OR current_setting('citus.version', true) IS NOT NULL)
       AND e.model_id = (SELECT id FROM model) AND e.image_id = ANY (%(query_image_ids)s::bigint[])) AS query_image_vectors,
    EXISTS (SELECT 1 FROM object_embeddings e
            WHERE e.model_id = (SELECT id FROM model) AND e.annotation_id = %(query_annotation_id)s::bigint) AS query_box_found,
    (SELECT e.embedding FROM object_embeddings e
     WHERE current_setting('citus.version', true) IS NOT NULL
       AND e.model_id = (SELECT id FROM model) AND e.annotation_id = %(query_annotation_id)s::bigint) AS query_box_vector,
    -- N, the model's HNSW index size (NULL: no index, or never counted): an HNSW ranking's
    -- ef_search rises with it (visearch.search.service.hnsw_ef_search)
    k.size AS hnsw_index_size
FROM (SELECT 1) one
LEFT JOIN model m ON true
CROSS JOIN concept_ids c
CROSS JOIN exclude_ids x
CROSS JOIN exact_cap k;
