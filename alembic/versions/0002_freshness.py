"""Freshness: worker progress table, embedding_status view, model activation time, late bytes
and re-enabled datasets wake the queue.

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
    op.execute(
        """
        DROP VIEW IF EXISTS embedding_status;
        DROP TRIGGER IF EXISTS datasets_enabled_notify ON datasets;
        DROP TRIGGER IF EXISTS image_content_enqueue_late_bytes ON image_content;
        DROP TRIGGER IF EXISTS embedding_models_stamp_activation ON embedding_models;
        DROP FUNCTION IF EXISTS datasets_enabled_notify, image_content_enqueue_late_bytes,
            embedding_models_stamp_activation;
        ALTER TABLE embedding_models DROP COLUMN IF EXISTS activated_at;
        DROP TABLE IF EXISTS embedding_workers;
        """
    )
