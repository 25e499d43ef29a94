"""The search's concept driver size as a function (Citus cannot plan it as a correlated subquery).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from alembic import op

from visearch.resources import read_sql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("schema/0011_concept_size.sql"))


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS concept_driver_size(text, bigint[], integer);")
