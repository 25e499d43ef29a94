-- Run by `visearch db distribute` after sql/citus/distribute.sql, in the same transaction.
--
-- The curation functions of 0007 (refresh_neighbour_edges, label_error_suspects,
-- near_duplicate_pairs) find each item's k nearest neighbours with one statement built by
-- knn_lookup_sql(): the vector table joined LATERALly to itself with ORDER BY distance LIMIT k.
-- Citus refuses that join (a LIMIT per outer row over a table spread on other shards). Here the
-- lookup resolves the items' vectors first and then runs, per item, the same statement the
-- search runs: ORDER BY distance LIMIT k+1 with the vector as a constant, which Citus sends to
-- every shard (each with its HNSW index) and whose top k it merges on the coordinator. The
-- three functions keep their SQL: only knn_lookup_sql() changes, to read from knn_lookup_each().
-- The cost is one distributed statement per item (one round trip to each shard's worker).

-- Columns: item_id, neighbour_id, similarity (k per item, best first; the item itself left out).
CREATE FUNCTION knn_lookup_each(model integer, kind text, ids bigint[], k integer)
    RETURNS TABLE (item_id bigint, neighbour_id bigint, similarity float8)
    LANGUAGE plpgsql SET citus.allow_nested_distributed_execution = on AS $$
DECLARE
    dims integer;
    tbl text;
    idcol text;
    item_ids bigint[];
    vectors vector[];
    lookup text;
BEGIN
    SELECT dim INTO STRICT dims FROM embedding_models WHERE id = model;
    IF kind = 'image' THEN tbl := 'image_embeddings'; idcol := 'image_id';
    ELSIF kind = 'object' THEN tbl := 'object_embeddings'; idcol := 'annotation_id';
    ELSE RAISE EXCEPTION 'item kind is image or object, not %', kind;
    END IF;
    EXECUTE format('SELECT array_agg(%2$I), array_agg(embedding) FROM %1$I WHERE model_id = $1 AND %2$I = ANY ($2)',
                   tbl, idcol)
        INTO item_ids, vectors USING model, ids;
    IF item_ids IS NULL THEN
        RETURN;
    END IF;
    -- the partial HNSW index's own expression, as in knn_lookup_sql() of 0007
    lookup := format($q$
        SELECT $3::bigint, n.id, n.similarity FROM (
            SELECT e.%2$I AS id, 1 - (e.embedding::vector(%4$s) <=> $1::vector(%4$s)) AS similarity
            FROM %1$I e
            WHERE e.model_id = %3$s
            ORDER BY e.embedding::vector(%4$s) <=> $1::vector(%4$s)
            LIMIT $2) AS n
        WHERE n.id <> $3$q$, tbl, idcol, model, dims);
    FOR i IN 1 .. cardinality(item_ids) LOOP
        RETURN QUERY EXECUTE lookup USING vectors[i], k + 1, item_ids[i];
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION knn_lookup_sql(model integer, kind text) RETURNS text
    LANGUAGE sql STABLE AS $$
    SELECT format('SELECT item_id, neighbour_id, similarity FROM knn_lookup_each(%s, %L, $1, $2)', model, kind);
$$;
