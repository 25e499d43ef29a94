-- Downgrade of revision 0005: ensure_hnsw_index() as revision 0001 defined it.
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
        ' WITH (m = 16, ef_construction = 64) WHERE model_id = %s',
        idx, vector_table, dims, model);
    RETURN idx;
END $$;
