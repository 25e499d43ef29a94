"""Hardening: queue priority (interactive before bulk), lease expiries apart from failed
attempts, and the media roots reference-only images must resolve inside.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

from visearch.resources import read_sql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("schema/0006_hardening.sql"))


def downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER IF EXISTS embedding_queue_priority ON embedding_queue;
        DROP FUNCTION IF EXISTS embedding_queue_priority();
        DROP INDEX IF EXISTS embedding_queue_ready_priority;
        ALTER TABLE embedding_queue DROP COLUMN IF EXISTS priority, DROP COLUMN IF EXISTS claims;
        DROP TABLE IF EXISTS media_roots;
        """
    )
    # 0001's enqueue_model_backlog (the bulk priority column is gone)
    op.execute(
        """
        CREATE OR REPLACE FUNCTION enqueue_model_backlog(model integer) RETURNS bigint
            LANGUAGE sql AS $$
            WITH added AS (
                INSERT INTO embedding_queue (model_id, item_kind, item_id, dataset_id)
                SELECT model, 'image', i.id, i.dataset_id
                FROM images i
                WHERE NOT EXISTS (SELECT 1 FROM image_embeddings e
                                  WHERE e.model_id = model AND e.image_id = i.id)
                UNION ALL
                SELECT model, 'object', a.id, i.dataset_id
                FROM annotations a JOIN images i ON i.id = a.image_id
                WHERE NOT EXISTS (SELECT 1 FROM object_embeddings e
                                  WHERE e.model_id = model AND e.annotation_id = a.id)
                ON CONFLICT DO NOTHING
                RETURNING 1
            )
            SELECT count(*) FROM added;
        $$;
        """
    )
