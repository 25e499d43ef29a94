"""Schema migrations through Alembic, run programmatically (``visearch db upgrade``)."""

from __future__ import annotations

import re
from functools import lru_cache

from visearch.resources import alembic_dir

# Alembic and SQLAlchemy are imported only when a migration runs (half a second of start-up for
# every command otherwise): a schema already at the head is recognised with psycopg and the
# revision ids written in the scripts (:func:`is_at_head`).

# Any constant works; it only has to be the same for every visearch process.
_MIGRATION_LOCK = 0x76697365617263  # "visearc"


def sqlalchemy_url(url: str) -> str:
    """``postgresql://...`` -> ``postgresql+psycopg://...`` (SQLAlchemy's psycopg 3 driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("script_location", str(alembic_dir()))
    cfg.set_main_option("version_locations", str(alembic_dir() / "versions"))
    cfg.attributes["url"] = sqlalchemy_url(url)
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision the installed code knows (parsed from the migration scripts once)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (``None``: never migrated)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()[0]:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None


_REVISION = re.compile(r"""^(down_)?revision\s*=\s*["']([^"']+)["']""", re.MULTILINE)


@lru_cache(maxsize=1)
def script_heads() -> frozenset[str]:
    """Revisions no script names as its ``down_revision``, read from the scripts' text.

    A cheap stand-in for Alembic's :func:`head_revision` to skip importing Alembic when nothing
    is to be done; any doubt (a merge revision, a tuple ``down_revision``) makes
    :func:`is_at_head` fall back to Alembic. ``tests/test_schema.py`` checks the two agree.
    """
    revisions, parents = set(), set()
    for script in (alembic_dir() / "versions").glob("*.py"):
        for down, rev in _REVISION.findall(script.read_text(encoding="utf-8")):
            (parents if down else revisions).add(rev)
    return frozenset(revisions - parents)


def is_at_head(url: str) -> bool:
    """Whether the database at ``url`` is at the newest revision (Alembic only when unsure)."""
    current = current_revision(url)
    heads = script_heads()
    if len(heads) == 1 and current in heads:
        return True
    return current == head_revision()


def upgrade(url: str, revision: str = "head") -> str:
    """Bring the schema at ``url`` to ``revision``; return the revision now current.

    Several processes may call this at once: a session advisory lock serialises them and the
    later ones find nothing left to do.
    """
    return _run("upgrade", url, revision)


def downgrade(url: str, revision: str) -> str:
    """Take the schema at ``url`` back to ``revision`` (what later revisions added is dropped;
    tables of earlier revisions keep their rows); return the revision now current."""
    return _run("downgrade", url, revision)


def _run(direction: str, url: str, revision: str) -> str:
    from alembic import command
    from sqlalchemy import create_engine, pool, text

    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
        conn.commit()
        try:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            getattr(command, direction)(cfg, revision)
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
            conn.commit()
    return current_revision(url) or ""
