-- HNSW build parameters chosen for the vector dimension (Alembic revision 0004).
--
-- 0001 built every model's index with pgvector's defaults (m = 16, ef_construction = 64). On
-- 1280-d image embeddings that graph has tail failures: on 9,145 Caltech-101 EfficientNet
-- vectors, mean recall@10 at ef_search 100 was 0.999 but two queries found none of their exact
-- top 10 and five not even themselves. A denser graph built with a wider beam (Malkov &
-- Yashunin 2018, arXiv:1603.09320, sec. 4: recall rises with M and efConstruction, more so in
-- high dimension) costs build time and memory, not query time at a given ef_search.
-- The index DDL stays in one SQL place: hnsw_build_options() is what any index build of a
-- vector table uses (ensure_hnsw_index below, or a CREATE INDEX CONCURRENTLY issued from Python).

CREATE FUNCTION hnsw_build_options(dim integer) RETURNS text
    LANGUAGE sql IMMUTABLE
    RETURN CASE WHEN dim > 512 THEN 'm = 24, ef_construction = 128'
                ELSE 'm = 16, ef_construction = 64' END;

CREATE OR REPLACE FUNCTION ensure_hnsw_index(vector_table text, model integer) RETURNS text
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
        ' WITH (%s) WHERE model_id = %s',
        idx, vector_table, dims, hnsw_build_options(dims), model);
    RETURN idx;
END $$;
