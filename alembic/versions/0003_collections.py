"""Collections: temporary (last search per owner) and saved result sets of searches.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op

from visearch.resources import read_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("schema/0003_collections.sql"))


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS collection_items, collections CASCADE;")
