"""The search's context as a function: each branch runs only when a request needs it.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""

from alembic import op

from visearch.resources import read_sql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None
# only creates a function, which runs on a Citus coordinator as it is (visearch.db.migrate.CITUS_SAFE)
runs_on_citus = True


def upgrade() -> None:
    op.execute(read_sql("schema/0015_search_context.sql"))


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS search_context(text, text, boolean, text, text[], text[], text[],"
               " integer, integer, bigint[], bigint);")
