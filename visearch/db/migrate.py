"""Schema migrations through Alembic, run programmatically (``visearch db upgrade``)."""

from __future__ import annotations

from functools import lru_cache

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool, text

from visearch.resources import alembic_dir

# Any constant works; it only has to be the same for every visearch process.
_MIGRATION_LOCK = 0x76697365617263  # "visearc"


def sqlalchemy_url(url: str) -> str:
    """``postgresql://...`` -> ``postgresql+psycopg://...`` (SQLAlchemy's psycopg 3 driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("script_location", str(alembic_dir()))
    cfg.set_main_option("version_locations", str(alembic_dir() / "versions"))
    cfg.attributes["url"] = sqlalchemy_url(url)
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision the installed code knows (parsed from the migration scripts once)."""
    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()


def current_revision(url: str) -> str | None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar()
        if not exists:
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(url: str, revision: str = "head") -> str:
    """Bring the schema at ``url`` to ``revision``; return the revision now current.

    Several processes may call this at once: a session advisory lock serialises them and the
    later ones find nothing left to do.
    """
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
        conn.commit()
        try:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
            conn.commit()
    return current_revision(url) or ""
