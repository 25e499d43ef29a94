-- HNSW indexes, one per (vector table, model) (Alembic revision 0001).
--
-- The vector columns have no fixed dimension, so each model's index is a partial index on the
-- expression embedding::vector(dim), restricted to that model's rows. A query is served by it
-- when it says `WHERE model_id = <id> ORDER BY embedding::vector(<dim>) <=> <query>`; written
-- without the cast, the same ORDER BY is an exact scan (the planner cannot match the index).
-- Parameters are pgvector's defaults (m = 16, ef_construction = 64; Malkov & Yashunin 2018,
-- arXiv:1603.09320). Build after bulk loads: inserting into an indexed table is far slower.

CREATE FUNCTION hnsw_index_name(vector_table text, model integer) RETURNS text
    LANGUAGE sql IMMUTABLE
    RETURN format('%s_hnsw_model_%s', vector_table, model);

-- Create the index if it is missing; return its name.
CREATE FUNCTION ensure_hnsw_index(vector_table text, model integer) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    dims integer;
    idx text := hnsw_index_name(vector_table, model);
BEGIN
    IF vector_table NOT IN ('image_embeddings', 'object_embeddings') THEN
        RAISE EXCEPTION 'not a vector table: %', vector_table;
    END IF;
    SELECT dim INTO STRICT dims FROM embedding_models WHERE id = model;
    EXECUTE format(
        'CREATE INDEX IF NOT EXISTS %I ON %I USING hnsw ((embedding::vector(%s)) vector_cosine_ops)'
        ' WITH (m = 16, ef_construction = 64) WHERE model_id = %s',
        idx, vector_table, dims, model);
    RETURN idx;
END $$;

CREATE FUNCTION drop_hnsw_index(vector_table text, model integer) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP INDEX IF EXISTS %I', hnsw_index_name(vector_table, model));
END $$;

-- A deleted model's vectors go with it (foreign keys); so must its indexes, or a later model
-- reusing the id would inherit an index of the wrong dimension.
CREATE FUNCTION embedding_models_drop_indexes() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM drop_hnsw_index('image_embeddings', OLD.id);
    PERFORM drop_hnsw_index('object_embeddings', OLD.id);
    RETURN NULL;
END $$;

CREATE TRIGGER embedding_models_drop_indexes
    AFTER DELETE ON embedding_models
    FOR EACH ROW EXECUTE FUNCTION embedding_models_drop_indexes();
