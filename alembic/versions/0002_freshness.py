"""Freshness: embedding worker progress, status view, late image bytes re-queue their image.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import op

from visearch.resources import read_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("schema/0002_freshness.sql"))


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS embedding_workers CASCADE;")
