-- Run by `visearch db distribute` after sql/citus/distribute.sql, in the same transaction, and
-- again (it can run any number of times) by `distribute` on a distributed schema and after
-- `visearch db upgrade` there (a migration may re-create the functions it changes).
--
-- Revision 0013's curation functions (refresh_neighbour_edges, label_error_suspects,
-- near_duplicate_pairs) find each item's k nearest neighbours with one statement built by
-- knn_lookup_sql(): the vector table joined LATERALly to itself with ORDER BY distance LIMIT k.
-- Citus refuses that join (a LIMIT per outer row over a table spread on other shards). Here the
-- lookup resolves the items' vectors and datasets first and then runs, per item, the same
-- statement the search runs: ORDER BY distance LIMIT k+1 with the vector as a constant, which
-- Citus sends to every shard (each with its HNSW index) and whose top k it merges on the
-- coordinator. The cost is one distributed statement per item (one round trip to each shard's
-- worker).
--
-- Scoped by dataset as 0013 scopes it on one node. 0013's neighbour filter (a SQL predicate on
-- the neighbour's vector row `e` that may use `qd.q_dataset`, the item's dataset) runs here
-- inside each shard's statement, where pgvector checks it during the index scan as on one node.
-- A subquery in it must then be correlated through the image id, the distribution column every
-- vector table carries (object_embeddings since 0014) and on which images, annotations and
-- labels are co-located; Citus refuses a lookup of a box by its id alone, and any correlated
-- subquery on a distributed table from the coordinator's merged rows. Hence three changes, the
-- rest of 0013's SQL unchanged:
--   * same_dataset_filter() reads the neighbour's dataset by `e.image_id`;
--   * each lookup row carries item_dataset and neighbour_dataset (read in the shards), and
--     refresh_neighbour_edges compares those instead of looking both up per row;
--   * label_error_suspects' voter filter for boxes finds the box by its image id and id.
-- The last two edit 0013's function text (pg_get_functiondef) at a named place, and fail
-- loudly if that text is not there.

-- Columns: item_id, neighbour_id, similarity (k per item, best first; the item itself left
-- out), item_dataset, neighbour_dataset: the k nearest that pass `neighbour_filter`.
CREATE OR REPLACE FUNCTION knn_lookup_each(model integer, kind text, ids bigint[], k integer, neighbour_filter text DEFAULT 'true')
    RETURNS TABLE (item_id bigint, neighbour_id bigint, similarity float8, item_dataset bigint, neighbour_dataset bigint)
    LANGUAGE plpgsql SET citus.allow_nested_distributed_execution = on AS $$
DECLARE
    dims integer;
    tbl text;
    idcol text;
    item_ids bigint[];
    vectors vector[];
    datasets bigint[];
    lookup text;
BEGIN
    SELECT dim INTO STRICT dims FROM embedding_models WHERE id = model;
    IF kind = 'image' THEN tbl := 'image_embeddings'; idcol := 'image_id';
    ELSIF kind = 'object' THEN tbl := 'object_embeddings'; idcol := 'annotation_id';
    ELSE RAISE EXCEPTION 'item kind is image or object, not %', kind;
    END IF;
    -- a vector row and its image share a shard (both on the image id): a pushed-down join
    EXECUTE format('SELECT array_agg(e.%2$I), array_agg(e.embedding), array_agg(i.dataset_id)'
                   ' FROM %1$I e JOIN images i ON i.id = e.image_id WHERE e.model_id = $1 AND e.%2$I = ANY ($2)',
                   tbl, idcol)
        INTO item_ids, vectors, datasets USING model, ids;
    IF item_ids IS NULL THEN
        RETURN;
    END IF;
    -- the partial HNSW index's own expression, as in knn_lookup_sql() of 0013
    lookup := format($q$
        SELECT $3::bigint, n.id, n.similarity, $4::bigint, n.dataset_id FROM (
            SELECT e.%2$I AS id, 1 - (e.embedding::vector(%4$s) <=> $1::vector(%4$s)) AS similarity,
                   ni.dataset_id
            FROM %1$I e
            JOIN images ni ON ni.id = e.image_id
            CROSS JOIN (VALUES ($4::bigint)) AS qd (q_dataset)
            WHERE e.model_id = %3$s AND (%5$s)
            ORDER BY e.embedding::vector(%4$s) <=> $1::vector(%4$s)
            LIMIT $2) AS n
        WHERE n.id <> $3$q$, tbl, idcol, model, dims, neighbour_filter);
    FOR i IN 1 .. cardinality(item_ids) LOOP
        RETURN QUERY EXECUTE lookup USING vectors[i], k + 1, item_ids[i], datasets[i];
    END LOOP;
END $$;

-- 0013's signature: item_id, neighbour_id, similarity (and the two datasets), from
-- knn_lookup_each(). It ends in a WHERE clause, as 0013's does (near_duplicate_pairs appends
-- ' AND false' to it).
CREATE OR REPLACE FUNCTION knn_lookup_sql(model integer, kind text, neighbour_filter text) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT format('SELECT item_id, neighbour_id, similarity, item_dataset, neighbour_dataset'
                  ' FROM knn_lookup_each(%s, %L, $1, $2, %L) WHERE true', model, kind, neighbour_filter);
$$;

-- "In the item's own dataset", by the neighbour's image id (co-located with its images row).
CREATE OR REPLACE FUNCTION same_dataset_filter(kind text) RETURNS text
    LANGUAGE sql IMMUTABLE AS $$
    SELECT '(SELECT di.dataset_id FROM images di WHERE di.id = e.image_id) = qd.q_dataset'
$$;

DO $$
DECLARE
    edit record;
    definition text;
BEGIN
    FOR edit IN
        SELECT * FROM (VALUES
            ('refresh_neighbour_edges(integer, text, integer, float8, integer)',
             $t$item_dataset_sql(kind, 'f.item_id'), item_dataset_sql(kind, 'f.neighbour_id')$t$,
             $t$'f.item_dataset', 'f.neighbour_dataset'$t$),
            ('label_error_suspects(text, text, bigint, integer, float8)',
             'WHERE va.id = e.annotation_id',
             'WHERE va.image_id = e.image_id AND va.id = e.annotation_id')
        ) AS t (function, old, new)
    LOOP
        definition := pg_get_functiondef(edit.function::regprocedure);
        IF position(edit.new IN definition) > 0 THEN
            CONTINUE;  -- edited already (distribute run again, or after visearch db upgrade)
        ELSIF position(edit.old IN definition) = 0 THEN
            RAISE EXCEPTION '% has no "%" (0013''s text): sql/citus/curation.sql needs updating',
                edit.function, edit.old;
        END IF;
        EXECUTE replace(definition, edit.old, edit.new);
    END LOOP;
END $$;
