"""Alembic environment: migrations run online against the URL visearch hands over.

The schema is written in SQL (``sql/schema/*.sql``) rather than ORM models, so there is no
autogenerate: each revision executes the SQL files it names.
"""

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
if not url:
    raise RuntimeError("no database URL: run migrations with `visearch db upgrade`")

connectable = config.attributes.get("connection")
if connectable is None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connectable, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
