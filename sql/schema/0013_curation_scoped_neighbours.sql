-- Curation (Alembic revision 0013): neighbour lookups that stay inside the dataset asked for.
--
-- 0007 looks up each item's k nearest neighbours among all of the model's vectors. When
-- datasets share content, those k can all be copies in other datasets: the item's
-- near-duplicates in its own dataset are then never looked at, and a label-error vote is cast
-- by neighbours of other datasets (or by nobody, once they are left out). The lookups here put
-- a filter on the neighbour inside the LATERAL k-NN subquery, where pgvector checks it while
-- the HNSW index scan runs; with its iterative index scan (hnsw.iterative_scan = relaxed_order,
-- as the search layer uses) the scan goes on past ef_search until k neighbours pass the filter,
-- or hnsw.max_scan_tuples (default 20,000) index tuples have been visited.
--
-- - refresh_neighbour_edges: each item's k nearest among all datasets (cross-dataset copies
--   are kept as before) and, for the items whose nearest include any item of another dataset,
--   a second lookup of the k nearest in the item's own dataset. An item whose k nearest are all
--   in its own dataset already has its in-dataset neighbours: no second lookup (so a
--   single-dataset database pays nothing more).
-- - label_error_suspects: the voters are the k nearest labelled items of the dataset asked for
--   (of all datasets when it is NULL), never unlabelled items dropped after the lookup.
-- - near_duplicate_pairs: with a dataset, the pairs among its items and those with any other
--   dataset's items (both lookups); without one, as before.

-- The SQL expression of the dataset id of item `item_id_expr` (an expression naming an
-- images.id for kind 'image', an annotations.id for kind 'object').
CREATE FUNCTION item_dataset_sql(kind text, item_id_expr text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF kind = 'image' THEN
        RETURN format('(SELECT di.dataset_id FROM images di WHERE di.id = %s)', item_id_expr);
    ELSIF kind = 'object' THEN
        RETURN format('(SELECT di.dataset_id FROM annotations da JOIN images di ON di.id = da.image_id'
                      ' WHERE da.id = %s)', item_id_expr);
    END IF;
    RAISE EXCEPTION 'item kind is image or object, not %', kind USING ERRCODE = 'invalid_parameter_value';
END $$;

-- The k nearest neighbours of each item in $1 (bigint[]) among the model's items of the kind
-- that pass `neighbour_filter`: a SQL predicate on the neighbour's vector row `e` (columns
-- image_id / annotation_id, model_id, embedding) that may also use `q` (the item's vector row)
-- and `qd.q_dataset` (the item's dataset id). $2 = k. Same columns and index use as the
-- 2-argument form (item_id, neighbour_id, similarity; the item itself left out): each lookup is
-- one HNSW index scan, the filter checked on the tuples it returns. Run it with
-- hnsw.iterative_scan = relaxed_order when the filter can reject neighbours.
CREATE FUNCTION knn_lookup_sql(model integer, kind text, neighbour_filter text) RETURNS text
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
CROSS JOIN LATERAL (SELECT %5$s AS q_dataset) qd
CROSS JOIN LATERAL (
    SELECT e.%2$I AS id, 1 - (e.embedding::vector(%4$s) <=> q.embedding::vector(%4$s)) AS similarity
    FROM %1$I e
    WHERE e.model_id = %3$s AND (%6$s)
    ORDER BY e.embedding::vector(%4$s) <=> q.embedding::vector(%4$s)
    LIMIT $2 + 1
) nn
WHERE q.model_id = %3$s AND q.%2$I = ANY ($1) AND nn.id <> q.%2$I$q$,
        tbl, idcol, model, dims, item_dataset_sql(kind, 'q.' || idcol), neighbour_filter);
END $$;

-- The 2-argument form is the unfiltered one (one place for the lookup's shape).
CREATE OR REPLACE FUNCTION knn_lookup_sql(model integer, kind text) RETURNS text
    LANGUAGE sql STABLE AS $$ SELECT knn_lookup_sql(model, kind, 'true') $$;

-- The neighbour filter "in the item's own dataset".
CREATE FUNCTION same_dataset_filter(kind text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT item_dataset_sql(kind, CASE kind WHEN 'image' THEN 'e.image_id' ELSE 'e.annotation_id' END)
           || ' = qd.q_dataset'
$$;

CREATE OR REPLACE FUNCTION refresh_neighbour_edges(
    model integer, kind text, k integer DEFAULT 10, min_similarity float8 DEFAULT 0.8,
    max_items integer DEFAULT 5000
) RETURNS integer
    LANGUAGE plpgsql SET enable_sort = off AS $$
DECLARE
    ids bigint[];
    mixed bigint[];
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
    PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
    -- 1. the k nearest among all datasets; the items with a neighbour in another dataset
    EXECUTE format($q$
        WITH found AS MATERIALIZED (%3$s),
        kept AS (
            INSERT INTO neighbour_edges (model_id, item_kind, item_a, item_b, similarity)
            SELECT %1$s, %2$L, least(item_id, neighbour_id), greatest(item_id, neighbour_id), max(similarity)
            FROM found
            WHERE similarity >= %4$s
            GROUP BY 3, 4
            ON CONFLICT (model_id, item_kind, item_a, item_b) DO UPDATE SET similarity = EXCLUDED.similarity)
        SELECT array_agg(DISTINCT f.item_id) FROM found f
        WHERE %5$s IS DISTINCT FROM %6$s$q$,
        model, kind, knn_lookup_sql(model, kind), min_similarity,
        item_dataset_sql(kind, 'f.item_id'), item_dataset_sql(kind, 'f.neighbour_id'))
    INTO mixed USING ids, k;
    -- 2. for those, the k nearest in their own dataset
    IF mixed IS NOT NULL THEN
        EXECUTE format($q$
            INSERT INTO neighbour_edges (model_id, item_kind, item_a, item_b, similarity)
            SELECT %1$s, %2$L, least(item_id, neighbour_id), greatest(item_id, neighbour_id), max(similarity)
            FROM (%3$s) AS found
            WHERE similarity >= %4$s
            GROUP BY 3, 4
            ON CONFLICT (model_id, item_kind, item_a, item_b)
            DO UPDATE SET similarity = greatest(neighbour_edges.similarity, EXCLUDED.similarity)$q$,
            model, kind, knn_lookup_sql(model, kind, same_dataset_filter(kind)), min_similarity)
        USING mixed, k;
    END IF;
    RETURN cardinality(ids);
END $$;

CREATE OR REPLACE FUNCTION label_error_suspects(
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
    voter text;  -- the neighbour filter: a labelled item (of `dataset`, when given)
    ids bigint[];
BEGIN
    SELECT m.id INTO model FROM embedding_models m WHERE m.name = model_name;
    IF model IS NULL THEN
        RAISE EXCEPTION 'unknown embedding model %', model_name USING ERRCODE = 'no_data_found';
    END IF;
    IF k < 1 OR k > 200 THEN
        RAISE EXCEPTION 'k is in [1, 200], not %', k USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- (id, image_id, concept_id, dataset_id) of every labelled item of the kind (of `dataset`)
    labelled := CASE kind
        WHEN 'object' THEN
            'SELECT a.id, a.image_id, a.concept_id, i.dataset_id FROM annotations a'
            ' JOIN images i ON i.id = a.image_id WHERE a.concept_id IS NOT NULL'
            || CASE WHEN dataset IS NULL THEN '' ELSE format(' AND i.dataset_id = %s', dataset) END
        WHEN 'image' THEN
            'SELECT l.image_id, l.image_id, min(l.concept_id), min(i.dataset_id) FROM image_labels l'
            ' JOIN images i ON i.id = l.image_id'
            || CASE WHEN dataset IS NULL THEN '' ELSE format(' WHERE i.dataset_id = %s', dataset) END
            || ' GROUP BY l.image_id HAVING count(DISTINCT l.concept_id) = 1'
        END;
    IF labelled IS NULL THEN
        RAISE EXCEPTION 'item kind is image or object, not %', kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    voter := CASE kind
        WHEN 'object' THEN
            'EXISTS (SELECT 1 FROM annotations va JOIN images vi ON vi.id = va.image_id'
            ' WHERE va.id = e.annotation_id AND va.concept_id IS NOT NULL'
            || CASE WHEN dataset IS NULL THEN '' ELSE format(' AND vi.dataset_id = %s', dataset) END || ')'
        ELSE
            '(SELECT count(DISTINCT vl.concept_id) FROM image_labels vl WHERE vl.image_id = e.image_id) = 1'
            || CASE WHEN dataset IS NULL THEN ''
                    ELSE format(' AND (SELECT vi.dataset_id FROM images vi WHERE vi.id = e.image_id) = %s', dataset)
               END
        END;
    EXECUTE format('SELECT array_agg(l.id) FROM (%s) AS l (id, image_id, concept_id, dataset_id)', labelled) INTO ids;
    PERFORM set_config('hnsw.ef_search', greatest(40, 2 * k)::text, true);
    PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
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
        labelled, knn_lookup_sql(model, kind, voter))
    USING ids, k, min_share;
END $$;

CREATE OR REPLACE FUNCTION near_duplicate_pairs(
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
    PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
    RETURN QUERY EXECUTE format($q$
        SELECT least(knn.item_id, knn.neighbour_id), greatest(knn.item_id, knn.neighbour_id),
               max(knn.similarity)::float8
        FROM (%s UNION ALL %s) AS knn
        WHERE knn.similarity >= $3
        GROUP BY 1, 2
        ORDER BY 3 DESC, 1, 2$q$,
        knn_lookup_sql(model, kind),
        CASE WHEN dataset IS NULL THEN knn_lookup_sql(model, kind) || ' AND false'
             ELSE knn_lookup_sql(model, kind, same_dataset_filter(kind)) END)
    USING ids, k, threshold;
END $$;
