"""Annotation tools: linked tool projects, their tasks as images, sync rejects.

Revision ID: 0008
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

from visearch.resources import read_sql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("schema/0008_annotation_tools.sql"))


def downgrade() -> None:
    # The triggers `visearch connect` put on a tool's tables call this function; drop them too.
    op.execute("DROP FUNCTION IF EXISTS visearch_annotation_tool_notify() CASCADE;")
    op.execute("DROP TABLE IF EXISTS tool_sync_rejects, tool_tasks, tool_projects CASCADE;")
