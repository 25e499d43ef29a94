-- The search's context as a function (Alembic revision 0015), called by visearch.search.service
-- (CONTEXT_CALL).
--
-- Everything a search needs to know before it ranks, in one call (visearch.search.service):
-- the names resolved to ids, the model that answers, whether its vectors are complete, whether
-- its HNSW index exists, and how big the filter that would drive an exact ranking is.
--
-- Why a function: until revision 0014 this was one SQL statement. Its plan had some 100 nodes
-- (every branch for every kind of request: named datasets or not, a named model or the serving
-- one, the Citus forms), and starting and ending that plan cost more than running the few
-- branches a request needs: 0.33 ms of execution a call, prepared with a generic plan, at
-- 100k x 1280-d. Here each branch is its own statement, run only when the request needs it
-- (PL/pgSQL keeps each statement's plan for the session). For a search by one stored image
-- with a #concept (bench/bench_search.py's data, scratch timings, medians): 0.12 ms of
-- execution (EXPLAIN ANALYZE, 2,000 calls), and 0.33 ms a round trip through db.prepared.run
-- against 0.53-0.58 ms for the statement (2,000 calls each, three times). Merging the
-- function's statements further (the datasets' two, the index size and the coverage probes)
-- measured the same (0.126 ms), so each part stays a statement of its own.
--
-- Arguments:
--   requested_model    text or NULL   the model the request names; NULL = the serving model
--   fallback_model     text           Settings.model: used when no active model qualifies
--   needs_text         boolean        free-text query: only models with a text tower serve it
--   kind               text           'image' | 'object'
--   dataset_names      text[] or NULL the datasets named (NULL = every enabled dataset)
--   concept_terms      text[]         required concepts as typed (without '#'); exclude_terms
--   exclude_terms      text[]         the excluded ones. concept_tag() makes them tags, as it
--                                     made the stored ones, and a term given twice counts once
--   cap                integer        Settings.exact_search_max_candidates: the most candidates
--                                     ever ranked exactly (see exact_cap below)
--   wanted_rows        integer        rows the ranking returns (limit + offset)
--   query_image_ids    bigint[] or NULL  a search by stored images (their vectors: see the end)
--   query_annotation_id bigint or NULL   a search by a stored box
--
-- Serving model (when none is named): among active models (text-capable ones for a text query),
-- the most recently activated one that COVERS the searched datasets, i.e. has no stale item
-- there (a queue row that is not failed: waiting, being embedded or retrying). Items given up
-- on (failed) do not block coverage. Covering is an EXISTS probe per model; only when no model
-- covers the datasets (while embedding runs) are stale items counted, to take the model with
-- the fewest. So a new model embeds in the background while the previous one serves. When no
-- active model qualifies: fallback_model, active or not.
--
-- Unknown names come back as NULL in the id arrays (and model_id NULL): the caller raises the
-- error with its hints (those extra queries only run on the error path).
--
-- Exact or HNSW (exact_cap): a selective filter drives the ranking from its own index and ranks
-- its n items exactly (cost ~ n); otherwise pgvector's HNSW iterative scan reads the model's
-- index until `wanted_rows` items pass the filter, about rows / s index tuples at selectivity
-- s = n / N, each costing a few distance computations on the graph (cost ~ rows * N / n). The
-- two meet at n = c * sqrt(rows * N); c = 4 was measured at 100k x 1280-d
-- (bench/bench_search.py: exact 1,000 items (a 1 in 100 filter) 18 ms vs HNSW 62 ms at recall
-- 0.97; 10,000 items 129 ms vs 47 ms). N is the model's HNSW index size (pg_class.reltuples,
-- kept by CREATE INDEX, VACUUM and ANALYZE; unknown before the first of these: then cap). Never
-- above cap. The driver concept size is counted up to exact_cap + 1 (concept_driver_size(),
-- revision 0011), the named datasets' size up to cap + 1.
--
-- A search by stored items: query_images_found is how many of them have a vector for the model
-- (fewer than the ids: unknown or not embedded, said by the caller). By one image or one box the
-- ranking statement reads the vector itself (fragments stored_image_query / stored_box_query):
-- it does not travel to the client and back. By several images their vectors come back here,
-- for the caller to average, and on Citus always (Citus refuses a subquery in ORDER BY, so
-- there the vector is bound as a parameter).
--
-- On Citus this runs on the coordinator: the statements on distributed tables (the stored query
-- vectors, the named datasets' size, concept_driver_size's counts) are plain ones Citus runs on
-- the shards.
CREATE FUNCTION search_context(
    requested_model text, fallback_model text, needs_text boolean, kind text, dataset_names text[],
    concept_terms text[], exclude_terms text[], cap integer, wanted_rows integer,
    query_image_ids bigint[], query_annotation_id bigint,
    OUT model_id integer, OUT model_name text, OUT dim integer, OUT embeds_text boolean,
    OUT is_active boolean,
    OUT dataset_ids bigint[],          -- the named datasets' ids in the order named (NULL: unknown)
    OUT disabled_datasets text[],      -- named datasets with AI search disabled
    OUT all_enabled boolean,           -- no dataset has AI search disabled
    OUT searched_ids bigint[],         -- the datasets searched: the named ones, else every enabled one
    OUT concept_ids bigint[], OUT concepts_found boolean,
    OUT exclude_concept_ids bigint[], OUT excludes_found boolean,
    OUT has_queued boolean,            -- coverage of the searched datasets by the model, for items
    OUT has_failed boolean,            -- of this kind: stale items left / items given up on
    OUT has_index boolean,             -- the model's HNSW index for this kind exists
    OUT exact_cap integer,
    OUT concept_size bigint,           -- the smallest required concept, in items of this kind
    OUT dataset_size bigint,           -- the named datasets' items
    OUT on_citus boolean,
    OUT query_images_found bigint, OUT query_image_vectors vector[],
    OUT query_box_found boolean, OUT query_box_vector vector,
    OUT hnsw_index_size float8)        -- N (NULL: no index, or never counted)
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    model_index regclass;
BEGIN
    on_citus := current_setting('citus.version', true) IS NOT NULL;
    IF dataset_names IS NOT NULL THEN
        SELECT array_agg(d.id ORDER BY n.ord) INTO dataset_ids
        FROM unnest(dataset_names) WITH ORDINALITY AS n (name, ord)
        LEFT JOIN datasets d ON d.name = n.name;
        SELECT array_agg(d.name ORDER BY d.name) INTO disabled_datasets
        FROM datasets d WHERE d.name = ANY (dataset_names) AND NOT d.search_enabled;
    END IF;
    all_enabled := NOT EXISTS (SELECT 1 FROM datasets d WHERE NOT d.search_enabled);
    SELECT array_agg(d.id ORDER BY d.id) INTO searched_ids
    FROM datasets d
    WHERE d.search_enabled AND (dataset_names IS NULL OR d.name = ANY (dataset_names));

    IF requested_model IS NOT NULL THEN
        SELECT m.id, m.name, m.dim, m.embeds_text, m.is_active
        INTO model_id, model_name, dim, embeds_text, is_active
        FROM embedding_models m WHERE m.name = requested_model;
    ELSE
        SELECT m.id, m.name, m.dim, m.embeds_text, m.is_active
        INTO model_id, model_name, dim, embeds_text, is_active
        FROM embedding_models m
        WHERE m.is_active AND (m.embeds_text OR NOT needs_text)
        -- stale items counted only for a model that does not cover the datasets (CASE is lazy)
        ORDER BY CASE WHEN EXISTS (SELECT 1 FROM embedding_queue q
                                   WHERE q.model_id = m.id AND NOT q.failed
                                     AND q.dataset_id = ANY (searched_ids))
                      THEN (SELECT count(*) FROM embedding_queue q
                            WHERE q.model_id = m.id AND NOT q.failed
                              AND q.dataset_id = ANY (searched_ids))
                      ELSE 0 END,
                 m.activated_at DESC, m.id DESC
        LIMIT 1;
        IF NOT FOUND THEN
            SELECT m.id, m.name, m.dim, m.embeds_text, m.is_active
            INTO model_id, model_name, dim, embeds_text, is_active
            FROM embedding_models m WHERE m.name = fallback_model;
        END IF;
    END IF;

    -- the required and the excluded concepts' ids in the order typed, a tag given twice once
    -- (an unknown tag: NULL in the array, and *_found false)
    concepts_found := true;
    excludes_found := true;
    IF cardinality(concept_terms) > 0 OR cardinality(exclude_terms) > 0 THEN
        SELECT array_agg(k.id ORDER BY t.ord) FILTER (WHERE NOT t.excluded),
               coalesce(bool_and(k.id IS NOT NULL) FILTER (WHERE NOT t.excluded), true),
               array_agg(k.id ORDER BY t.ord) FILTER (WHERE t.excluded),
               coalesce(bool_and(k.id IS NOT NULL) FILTER (WHERE t.excluded), true)
        INTO concept_ids, concepts_found, exclude_concept_ids, excludes_found
        FROM (SELECT concept_tag(u.term) AS tag, u.excluded, min(u.ord) AS ord
              FROM (SELECT c.term, c.ord, false AS excluded
                    FROM unnest(concept_terms) WITH ORDINALITY AS c (term, ord)
                    UNION ALL
                    SELECT x.term, x.ord, true FROM unnest(exclude_terms) WITH ORDINALITY AS x (term, ord)) AS u
              GROUP BY 1, 2) AS t
        LEFT JOIN concepts k ON k.tag = t.tag;
    END IF;

    model_index := to_regclass(hnsw_index_name(CASE kind WHEN 'image' THEN 'image_embeddings'
                                                   ELSE 'object_embeddings' END, model_id));
    has_index := model_index IS NOT NULL;
    IF has_index THEN
        SELECT r.reltuples INTO hnsw_index_size FROM pg_class r WHERE r.oid = model_index AND r.reltuples > 0;
    END IF;
    exact_cap := least(cap, coalesce(ceil(4 * sqrt(greatest(wanted_rows, 1)::float8 * hnsw_index_size))::integer,
                                     cap));
    IF concept_ids IS NOT NULL THEN  -- (NULL without a required concept)
        concept_size := concept_driver_size(kind, concept_ids, exact_cap);
    END IF;
    IF dataset_names IS NOT NULL THEN  -- from images_dataset_external_id; boxes through their images
        IF kind = 'image' THEN
            SELECT count(*) INTO dataset_size
            FROM (SELECT 1 FROM images i WHERE i.dataset_id = ANY (dataset_ids) LIMIT cap + 1) s;
        ELSE
            SELECT count(*) INTO dataset_size
            FROM (SELECT 1 FROM images i JOIN annotations a ON a.image_id = i.id
                  WHERE i.dataset_id = ANY (dataset_ids) LIMIT cap + 1) s;
        END IF;
    END IF;

    has_queued := EXISTS (SELECT 1 FROM embedding_queue q
                          WHERE q.model_id = search_context.model_id AND q.item_kind = kind
                            AND NOT q.failed AND q.dataset_id = ANY (searched_ids));
    has_failed := EXISTS (SELECT 1 FROM embedding_queue q
                          WHERE q.model_id = search_context.model_id AND q.item_kind = kind
                            AND q.failed AND q.dataset_id = ANY (searched_ids));

    query_images_found := 0;
    IF query_image_ids IS NOT NULL THEN
        IF cardinality(query_image_ids) > 1 OR on_citus THEN
            SELECT count(*), array_agg(e.embedding ORDER BY e.image_id)
            INTO query_images_found, query_image_vectors
            FROM image_embeddings e
            WHERE e.model_id = search_context.model_id AND e.image_id = ANY (query_image_ids);
        ELSE
            SELECT count(*) INTO query_images_found
            FROM image_embeddings e
            WHERE e.model_id = search_context.model_id AND e.image_id = ANY (query_image_ids);
        END IF;
    END IF;
    query_box_found := false;
    IF query_annotation_id IS NOT NULL THEN
        SELECT true, CASE WHEN on_citus THEN e.embedding END
        INTO query_box_found, query_box_vector
        FROM object_embeddings e
        WHERE e.model_id = search_context.model_id AND e.annotation_id = query_annotation_id;
        query_box_found := FOUND;
    END IF;
END $$;
