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


class MigrationRefused(RuntimeError):
    """A migration that cannot run on this database as it is; the message says what to do."""


#: The module attribute with which a revision script says that its SQL runs as it is on a
#: schema distributed by ``visearch db distribute`` (Citus): it only (re)creates functions, or
#: changes tables in ways Citus propagates to the shards (ADD COLUMN without a rewrite of the
#: rows, CREATE INDEX). Revisions without it are refused there (see :func:`upgrade`).
CITUS_SAFE = "runs_on_citus"


def upgrade(url: str, revision: str = "head") -> str:
    """Bring the schema at ``url`` to ``revision``; return the revision now current.

    Several processes may call this at once: a session advisory lock serialises them and the
    later ones find nothing left to do.

    On a schema distributed with Citus (``visearch db distribute``), the revisions to run must
    each say ``runs_on_citus = True`` (:data:`CITUS_SAFE`); after them the Citus forms of
    functions are applied again (:func:`visearch.db.citus.refresh_distributed_schema`).

    Raises:
        MigrationRefused: the schema is distributed and a revision to run is not marked as
            running there; nothing was changed. The message names the revisions and the steps
            to take instead (README "Scaling", "Upgrading a distributed database").
    """
    return _run("upgrade", url, revision)


def _pending(cfg, current: str | None, revision: str) -> list:
    """The revision scripts an upgrade from ``current`` to ``revision`` runs, oldest first."""
    from alembic.script import ScriptDirectory

    return list(reversed(list(ScriptDirectory.from_config(cfg).iterate_revisions(revision, current))))


def _refuse_unless_citus_safe(cfg, url: str, revision: str) -> bool:
    """Whether the schema is distributed; raise :class:`MigrationRefused` if it is and a revision
    to run is not marked :data:`CITUS_SAFE`."""
    import psycopg

    from visearch.db.citus import is_distributed

    with psycopg.connect(url, autocommit=True) as conn:
        if not is_distributed(conn):
            return False
    current = current_revision(url)
    unsafe = [s.revision for s in _pending(cfg, current, revision) if not getattr(s.module, CITUS_SAFE, False)]
    if unsafe:
        raise MigrationRefused(
            f"this database is distributed with Citus (visearch db distribute) at revision {current}, "
            f"and revision(s) {', '.join(unsafe)} change distributed tables in ways that only run on "
            "one node; nothing was changed. Move the data into a new database instead: create it "
            "on the cluster (citus and vector on every node, citus_set_coordinator_host and "
            "citus_add_node in it), run `visearch db upgrade` and `visearch db distribute` there, "
            "then `visearch ingest` the datasets into it and `visearch embed` (see README "
            "'Scaling', 'Upgrading a distributed database'). Until then, run the visearch release "
            f"whose newest revision is {current}.")
    return True


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
            distributed = direction == "upgrade" and _refuse_unless_citus_safe(cfg, url, revision)
            cfg.attributes["connection"] = conn
            getattr(command, direction)(cfg, revision)
            conn.commit()
            if distributed:
                from visearch.db.citus import refresh_distributed_schema

                refresh_distributed_schema(url)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
            conn.commit()
    return current_revision(url) or ""
