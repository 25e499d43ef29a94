"""Console look-ups: find images by file name or external id across datasets; concept prefixes.

Revision ID: 0010
Revises: 0003
Create Date: 2026-11-30
"""

from alembic import op

from visearch.resources import read_sql

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("schema/0010_console.sql"))


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS images_file_name_pattern, images_external_id_pattern,"
               " concepts_tag_pattern;")
