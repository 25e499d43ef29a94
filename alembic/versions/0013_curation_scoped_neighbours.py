"""Curation: neighbour lookups scoped to the dataset (near-duplicate edges, label-error voters).

Revision ID: 0013
Revises: 0011
Create Date: 2026-11-30
"""

from alembic import op

from visearch.resources import function_definitions, read_sql

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None

# functions 0013 replaces; downgrade restores 0007's definitions from its (frozen) SQL file
_REPLACED = ("knn_lookup_sql", "refresh_neighbour_edges", "label_error_suspects", "near_duplicate_pairs")


def upgrade() -> None:
    op.execute(read_sql("schema/0013_curation_scoped_neighbours.sql"))


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS knn_lookup_sql(integer, text)")  # a SQL function now
    for statement in function_definitions("schema/0007_curation.sql", _REPLACED):
        op.execute(statement)
    op.execute(
        """
        DROP FUNCTION IF EXISTS knn_lookup_sql(integer, text, text);
        DROP FUNCTION IF EXISTS same_dataset_filter(text);
        DROP FUNCTION IF EXISTS item_dataset_sql(text, text);
        """
    )
