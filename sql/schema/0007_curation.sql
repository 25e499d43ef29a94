-- Curation (Alembic revision 0007): near-neighbour edges kept incrementally, and label-error
-- suspects, as tables and functions analysts can call.
--
-- Near-duplicates are connected components over "very similar" pairs. Finding the pairs by
-- comparing everything with everything is O(N^2); instead each item looks up its k nearest
-- neighbours through the model's HNSW index once, when its vector is written, and the pairs
-- above a floor similarity are kept in neighbour_edges. A statement-level trigger on the vector
-- tables queues every written vector in neighbour_pending (so any client writing vectors is
-- covered); refresh_neighbour_edges() drains that queue (the embedding worker calls it after
-- each run, `visearch duplicates` before it reads). A dataset of 1M images therefore never
-- needs a full recompute: only new and re-embedded items are looked up.

CREATE TABLE neighbour_edges (
    model_id    integer NOT NULL REFERENCES embedding_models (id) ON DELETE CASCADE,
    item_kind   text NOT NULL CHECK (item_kind IN ('image', 'object')),
    item_a      bigint NOT NULL,             -- images.id or annotations.id; item_a < item_b
    item_b      bigint NOT NULL,
    similarity  real NOT NULL,               -- cosine similarity, >= the floor it was kept with
    PRIMARY KEY (model_id, item_kind, item_a, item_b),
    CHECK (item_a < item_b)
);
CREATE INDEX neighbour_edges_b ON neighbour_edges (model_id, item_kind, item_b);

-- Vectors written since their neighbours were last looked up.
CREATE TABLE neighbour_pending (
    model_id   integer NOT NULL REFERENCES embedding_models (id) ON DELETE CASCADE,
    item_kind  text NOT NULL CHECK (item_kind IN ('image', 'object')),
    item_id    bigint NOT NULL,
    PRIMARY KEY (model_id, item_kind, item_id)
);

-- Statement-level triggers with transition tables: one INSERT ... SELECT per COPY/upsert, not
-- one per row. (PostgreSQL allows a transition table only on a single-event trigger.)
CREATE FUNCTION neighbour_pending_images() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO neighbour_pending (model_id, item_kind, item_id)
    SELECT DISTINCT model_id, 'image', image_id FROM written
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION neighbour_pending_objects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO neighbour_pending (model_id, item_kind, item_id)
    SELECT DISTINCT model_id, 'object', annotation_id FROM written
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER image_embeddings_neighbours_insert AFTER INSERT ON image_embeddings
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION neighbour_pending_images();
CREATE TRIGGER image_embeddings_neighbours_update AFTER UPDATE ON image_embeddings
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION neighbour_pending_images();
CREATE TRIGGER object_embeddings_neighbours_insert AFTER INSERT ON object_embeddings
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION neighbour_pending_objects();
CREATE TRIGGER object_embeddings_neighbours_update AFTER UPDATE ON object_embeddings
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION neighbour_pending_objects();

-- A deleted vector (its item deleted, or its model) takes its edges with it.
CREATE FUNCTION neighbour_edges_forget_images() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM neighbour_edges x USING removed r
    WHERE x.model_id = r.model_id AND x.item_kind = 'image' AND r.image_id IN (x.item_a, x.item_b);
    DELETE FROM neighbour_pending p USING removed r
    WHERE p.model_id = r.model_id AND p.item_kind = 'image' AND p.item_id = r.image_id;
    RETURN NULL;
END $$;

CREATE FUNCTION neighbour_edges_forget_objects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM neighbour_edges x USING removed r
    WHERE x.model_id = r.model_id AND x.item_kind = 'object' AND r.annotation_id IN (x.item_a, x.item_b);
    DELETE FROM neighbour_pending p USING removed r
    WHERE p.model_id = r.model_id AND p.item_kind = 'object' AND p.item_id = r.annotation_id;
    RETURN NULL;
END $$;

CREATE TRIGGER image_embeddings_neighbours_delete AFTER DELETE ON image_embeddings
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION neighbour_edges_forget_images();
CREATE TRIGGER object_embeddings_neighbours_delete AFTER DELETE ON object_embeddings
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION neighbour_edges_forget_objects();

-- The k nearest neighbours of each item in %(items)s, as one statement served by the model's
-- HNSW index: a LATERAL lookup per item, ORDER BY embedding::vector(dim) <=> its vector, which
-- is the exact expression of the partial index WHERE model_id = <model> (with the model id and
-- dimension written into the text, so the planner can match the partial index).
-- Returns the statement text; $1 = bigint[] of item ids, $2 = k. The functions that run it
-- say SET enable_sort = off (for their own duration only): on a table without statistics yet
-- (just loaded) the planner may otherwise prefer sorting all of the model's vectors per item.
-- Columns: item_id, neighbour_id, similarity (best first per item; the item itself left out).
CREATE FUNCTION knn_lookup_sql(model integer, kind text) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    dims integer;
    tbl text;
    idcol text;
BEGIN
    SELECT dim INTO STRICT dims FROM embedding_models WHERE id = model;
    IF kind = 'image' THEN tbl := 'image_embeddings'; idcol := 'image_id';
    ELSIF kind = 'object' THEN tbl := 'object_embeddings'; idcol := 'annotation_id';
    ELSE RAISE EXCEPTION 'item kind is image or object, not %', kind;
    END IF;
    RETURN format($q$
SELECT q.%2$I AS item_id, nn.id AS neighbour_id, nn.similarity
FROM %1$I q
CROSS JOIN LATERAL (
    SELECT e.%2$I AS id, 1 - (e.embedding::vector(%4$s) <=> q.embedding::vector(%4$s)) AS similarity
    FROM %1$I e
    WHERE e.model_id = %3$s
    ORDER BY e.embedding::vector(%4$s) <=> q.embedding::vector(%4$s)
    LIMIT $2 + 1
) nn
WHERE q.model_id = %3$s AND q.%2$I = ANY ($1) AND nn.id <> q.%2$I$q$,
        tbl, idcol, model, dims);
END $$;

-- Look up the neighbours of up to max_items pending items of (model, kind) and keep the pairs
-- with similarity >= min_similarity. Returns how many items were processed. Does nothing while
-- the model has no HNSW index for the kind (a bulk load drops it): never an all-pairs scan.
CREATE FUNCTION refresh_neighbour_edges(
    model integer, kind text, k integer DEFAULT 10, min_similarity float8 DEFAULT 0.8,
    max_items integer DEFAULT 5000
) RETURNS integer
    LANGUAGE plpgsql SET enable_sort = off AS $$
DECLARE
    ids bigint[];
    tbl text := CASE kind WHEN 'image' THEN 'image_embeddings' ELSE 'object_embeddings' END;
BEGIN
    IF to_regclass(hnsw_index_name(tbl, model)) IS NULL THEN
        RETURN 0;
    END IF;
    WITH taken AS (
        DELETE FROM neighbour_pending p
        WHERE p.model_id = model AND p.item_kind = kind AND p.item_id IN (
            SELECT item_id FROM neighbour_pending
            WHERE model_id = model AND item_kind = kind
            ORDER BY item_id LIMIT max_items)
        RETURNING p.item_id)
    SELECT array_agg(item_id) INTO ids FROM taken;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM neighbour_edges x
    WHERE x.model_id = model AND x.item_kind = kind AND (x.item_a = ANY (ids) OR x.item_b = ANY (ids));
    PERFORM set_config('hnsw.ef_search', greatest(40, 2 * k)::text, true);
    EXECUTE format($q$
        INSERT INTO neighbour_edges (model_id, item_kind, item_a, item_b, similarity)
        SELECT %1$s, %2$L, least(item_id, neighbour_id), greatest(item_id, neighbour_id), max(similarity)
        FROM (%3$s) AS found
        WHERE similarity >= %4$s
        GROUP BY 3, 4
        ON CONFLICT (model_id, item_kind, item_a, item_b) DO UPDATE SET similarity = EXCLUDED.similarity$q$,
        model, kind, knn_lookup_sql(model, kind), min_similarity)
    USING ids, k;
    RETURN cardinality(ids);
END $$;

-- Label-error suspects: labelled items whose k nearest neighbours mostly carry another concept.
-- Objects: a box's concept is annotations.concept_id. Images: an image's concept is its image
-- label when it has exactly one (image_labels), e.g. CIFAR-10 folder labels.
-- Each item's neighbours come from the model's HNSW index (knn_lookup_sql), among all items of
-- the model that carry a concept. Columns:
--   item_id, image_id, concept (its own), looks_like (the most common other concept among the
--   neighbours), share (fraction of the k neighbours carrying looks_like), agreeing (fraction
--   carrying its own concept), neighbour_ids, neighbour_concepts, scores (cosine similarities),
--   best first.
-- Ordered by share descending, then agreeing ascending: the strongest suspects first.
CREATE FUNCTION label_error_suspects(
    model_name text, kind text DEFAULT 'object', dataset bigint DEFAULT NULL,
    k integer DEFAULT 10, min_share float8 DEFAULT 0.5
) RETURNS TABLE (
    item_id bigint, image_id bigint, concept text, looks_like text, share float8, agreeing float8,
    neighbour_ids bigint[], neighbour_concepts text[], scores float8[]
)
    LANGUAGE plpgsql SET enable_sort = off AS $$
DECLARE
    model integer;
    labelled text;
    ids bigint[];
BEGIN
    SELECT m.id INTO model FROM embedding_models m WHERE m.name = model_name;
    IF model IS NULL THEN
        RAISE EXCEPTION 'unknown embedding model %', model_name USING ERRCODE = 'no_data_found';
    END IF;
    IF k < 1 OR k > 200 THEN
        RAISE EXCEPTION 'k is in [1, 200], not %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- (id, image_id, concept_id, dataset_id) of every labelled item of the kind
    labelled := CASE kind
        WHEN 'object' THEN
            'SELECT a.id, a.image_id, a.concept_id, i.dataset_id FROM annotations a'
            ' JOIN images i ON i.id = a.image_id WHERE a.concept_id IS NOT NULL'
        WHEN 'image' THEN
            'SELECT l.image_id, l.image_id, min(l.concept_id), min(i.dataset_id) FROM image_labels l'
            ' JOIN images i ON i.id = l.image_id GROUP BY l.image_id HAVING count(DISTINCT l.concept_id) = 1'
        END;
    IF labelled IS NULL THEN
        RAISE EXCEPTION 'item kind is image or object, not %', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('SELECT array_agg(l.id) FROM (%s) AS l (id, image_id, concept_id, dataset_id)'
                   ' WHERE $1::bigint IS NULL OR l.dataset_id = $1::bigint', labelled)
        INTO ids USING dataset;
    PERFORM set_config('hnsw.ef_search', greatest(40, 2 * k)::text, true);
    RETURN QUERY EXECUTE format($q$
        WITH items (id, image_id, concept_id, dataset_id) AS MATERIALIZED (%1$s),
        kept AS (
            SELECT * FROM (
                SELECT knn.item_id, knn.neighbour_id, knn.similarity, n.concept_id,
                       row_number() OVER (PARTITION BY knn.item_id
                                          ORDER BY knn.similarity DESC, knn.neighbour_id) AS rank
                FROM (%2$s) AS knn
                JOIN items n ON n.id = knn.neighbour_id) ranked
            WHERE rank <= $2
        ),
        votes AS (
            SELECT x.item_id, x.concept_id, count(*) AS n,
                   row_number() OVER (PARTITION BY x.item_id
                                      ORDER BY count(*) DESC, max(x.similarity) DESC) AS place
            FROM kept x JOIN items s ON s.id = x.item_id
            WHERE x.concept_id <> s.concept_id
            GROUP BY x.item_id, x.concept_id
        )
        SELECT s.id, s.image_id, own.name, other.name,
               v.n::float8 / count(*),
               (count(*) FILTER (WHERE x.concept_id = s.concept_id))::float8 / count(*),
               array_agg(x.neighbour_id ORDER BY x.rank), array_agg(xc.name::text ORDER BY x.rank),
               array_agg(x.similarity::float8 ORDER BY x.rank)
        FROM items s
        JOIN votes v ON v.item_id = s.id AND v.place = 1
        JOIN concepts own ON own.id = s.concept_id
        JOIN concepts other ON other.id = v.concept_id
        JOIN kept x ON x.item_id = s.id
        JOIN concepts xc ON xc.id = x.concept_id
        GROUP BY s.id, s.image_id, own.name, other.name, v.n
        HAVING v.n::float8 / count(*) >= $3
        ORDER BY 5 DESC, 6, 1$q$,
        labelled, knn_lookup_sql(model, kind))
    USING ids, k, min_share;
END $$;

-- Near-duplicate pairs computed live (not from neighbour_edges): each item of the kind (of
-- `dataset`, or all) looks up its k nearest neighbours through the model's HNSW index; pairs
-- with cosine similarity >= threshold are returned once (item_id < neighbour_id), best first.
CREATE FUNCTION near_duplicate_pairs(
    model_name text, kind text DEFAULT 'image', dataset bigint DEFAULT NULL,
    k integer DEFAULT 5, threshold float8 DEFAULT 0.95
) RETURNS TABLE (item_id bigint, neighbour_id bigint, similarity float8)
    LANGUAGE plpgsql SET enable_sort = off AS $$
DECLARE
    model integer;
    ids bigint[];
BEGIN
    SELECT m.id INTO model FROM embedding_models m WHERE m.name = model_name;
    IF model IS NULL THEN
        RAISE EXCEPTION 'unknown embedding model %', model_name USING ERRCODE = 'no_data_found';
    END IF;
    IF kind = 'image' THEN
        SELECT array_agg(i.id) INTO ids FROM images i WHERE dataset IS NULL OR i.dataset_id = dataset;
    ELSIF kind = 'object' THEN
        SELECT array_agg(a.id) INTO ids FROM annotations a JOIN images i ON i.id = a.image_id
        WHERE dataset IS NULL OR i.dataset_id = dataset;
    ELSE
        RAISE EXCEPTION 'item kind is image or object, not %', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('hnsw.ef_search', greatest(40, 2 * k)::text, true);
    RETURN QUERY EXECUTE format($q$
        SELECT least(knn.item_id, knn.neighbour_id), greatest(knn.item_id, knn.neighbour_id),
               max(knn.similarity)::float8
        FROM (%s) AS knn
        WHERE knn.similarity >= $3
        GROUP BY 1, 2
        ORDER BY 3 DESC, 1, 2$q$, knn_lookup_sql(model, kind))
    USING ids, k, threshold;
END $$;
