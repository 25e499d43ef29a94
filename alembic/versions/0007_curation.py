"""Curation: neighbour edges kept incrementally (near-duplicates), label-error suspects.

Revision ID: 0007
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

from visearch.resources import read_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("schema/0007_curation.sql"))
    # vectors written before this revision: their neighbours are looked up on the next refresh
    op.execute(
        "INSERT INTO neighbour_pending (model_id, item_kind, item_id)"
        " SELECT model_id, 'image', image_id FROM image_embeddings"
        " UNION ALL SELECT model_id, 'object', annotation_id FROM object_embeddings"
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER IF EXISTS image_embeddings_neighbours_insert ON image_embeddings;
        DROP TRIGGER IF EXISTS image_embeddings_neighbours_update ON image_embeddings;
        DROP TRIGGER IF EXISTS image_embeddings_neighbours_delete ON image_embeddings;
        DROP TRIGGER IF EXISTS object_embeddings_neighbours_insert ON object_embeddings;
        DROP TRIGGER IF EXISTS object_embeddings_neighbours_update ON object_embeddings;
        DROP TRIGGER IF EXISTS object_embeddings_neighbours_delete ON object_embeddings;
        DROP FUNCTION IF EXISTS near_duplicate_pairs(text, text, bigint, integer, float8);
        DROP FUNCTION IF EXISTS label_error_suspects(text, text, bigint, integer, float8);
        DROP FUNCTION IF EXISTS refresh_neighbour_edges(integer, text, integer, float8, integer);
        DROP FUNCTION IF EXISTS knn_lookup_sql(integer, text);
        DROP FUNCTION IF EXISTS neighbour_pending_images(), neighbour_pending_objects(),
            neighbour_edges_forget_images(), neighbour_edges_forget_objects();
        DROP TABLE IF EXISTS neighbour_edges, neighbour_pending;
        """
    )
