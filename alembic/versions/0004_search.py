"""Search: HNSW build parameters chosen for the vector dimension (hnsw_build_options).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

from visearch.resources import read_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# 0001's function, as it was (migrations are frozen: downgrade restores it verbatim)
_ENSURE_0001 = """
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
"""


def upgrade() -> None:
    op.execute(read_sql("schema/0004_search.sql"))


def downgrade() -> None:
    op.execute(_ENSURE_0001)
    op.execute("DROP FUNCTION IF EXISTS hnsw_build_options(integer);")
