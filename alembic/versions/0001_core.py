"""Core schema: datasets, images, concepts, annotations, captions, models, vectors, queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from alembic import op

from visearch.resources import read_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("schema/0001_core.sql"))
    op.execute(read_sql("schema/0001_queue_triggers.sql"))
    op.execute(read_sql("schema/0001_hnsw.sql"))


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE IF EXISTS embedding_queue, object_embeddings, image_embeddings,
            embedding_models, captions, ingest_rejects, annotations, image_labels, concepts, image_content,
            images, datasets CASCADE;
        DROP FUNCTION IF EXISTS concept_tag, annotations_check_bbox_inside_image, enqueue_items,
            enqueue_model_backlog, images_enqueue, image_content_enqueue, annotations_enqueue,
            dequeue_deleted_item, embedding_models_enqueue_backlog, embedding_queue_notify,
            hnsw_index_name, ensure_hnsw_index, drop_hnsw_index, embedding_models_drop_indexes CASCADE;
        """
    )
