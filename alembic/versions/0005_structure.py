"""Structure: HNSW index builds move from PL/pgSQL to Python (CREATE INDEX CONCURRENTLY).

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

from visearch.resources import read_sql

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("schema/0005_structure.sql"))


def downgrade() -> None:
    op.execute(read_sql("schema/0005_structure_downgrade.sql"))
