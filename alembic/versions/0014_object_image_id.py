"""Object vectors carry their box's image id, so Citus co-locates them with the images.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from alembic import op

from visearch.resources import read_sql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("schema/0014_object_image_id.sql"))


def downgrade() -> None:
    op.execute(read_sql("schema/0014_object_image_id_downgrade.sql"))
