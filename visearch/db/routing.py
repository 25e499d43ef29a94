"""Read replicas: send reads that may be slightly stale to PostgreSQL streaming replicas.

``VISEARCH_READ_DATABASE_URLS`` (comma-separated libpq URLs of hot standbys of the primary)
turns it on. A :class:`ReadRouter` hands out, per read, a replica chosen round robin among the
*eligible* ones, and the primary when none is:

- **healthy**: a background thread checks every replica each ``check_interval_s`` seconds
  (``SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()``, 2 s connect timeout). A replica that
  fails a check, a connection or a query is out until a later check succeeds.
- **fresh enough** (the replica-lag rule): each check also records the primary's WAL position
  ``pg_current_wal_lsn()`` with the time it was read. A replica *covers* time T when it has
  replayed the primary's WAL up to the position recorded at T, i.e. it holds every transaction
  committed before T. A read goes to a replica only if that replica covers
  ``now - max_lag_s`` (so no read sees data older than ``max_lag_s`` seconds, plus one check
  interval) **and** covers the caller's last write (:meth:`ReadRouter.note_write`, recorded
  when the HTTP API answers a successful write): whoever has just uploaded images or changed a
  dataset reads from the primary until a replica has replayed that change.

What goes where is the caller's choice: writes, and reads that must see a write of the same
request (a collection page just recorded, ids just inserted), use the primary :class:`Database`;
searches, score histograms, thumbnails and status reads go through :meth:`ReadRouter.run`, which
hands the read a :class:`Database`-like handle on a replica and re-runs it on the next replica or
the primary if the replica fails in the middle of it (reads are idempotent).

This is PostgreSQL's own physical replication; visearch only routes. Set replicas up with
``pg_basebackup -R`` (or any managed service's read replicas); see README "Scaling".
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, TypeVar

import psycopg
from pgvector.psycopg import register_vector
from psycopg_pool import ConnectionPool

from visearch.db.database import Database, _redact

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Errors after which a read is retried elsewhere: the replica's connection broke (it went
#: down, or the pool could not get a connection in time), or the standby cancelled the query
#: because WAL replay needed the rows it was reading (SQLSTATE 40001, "conflict with recovery").
_RETRYABLE = (psycopg.OperationalError, psycopg.errors.SerializationFailure)


@dataclass
class Replica:
    """One read replica and what the last health check learnt about it."""

    url: str
    healthy: bool = False
    #: bytes of primary WAL replayed (``pg_last_wal_replay_lsn() - '0/0'``), at the last check
    replay_lsn: int = -1
    #: time.monotonic() up to which the replica holds every commit of the primary
    covers: float = float("-inf")
    served: int = 0  # reads handed to it (connections taken), for status and tests
    last_error: str | None = None
    _pool: ConnectionPool | None = field(default=None, repr=False)


class ReadRouter:
    """Chooses where each read runs: a healthy, fresh-enough replica (round robin) or the primary.

    Args:
        primary: the primary database (writes, and the fallback for reads).
        replica_urls: libpq URLs of hot standbys of ``primary``.
        max_lag_s: a replica that has not replayed what the primary had ``max_lag_s`` seconds
            ago takes no reads.
        check_interval_s: seconds between health checks (background thread).
        pool_max_size: connections per replica pool.
        pool_timeout_s: seconds to wait for a replica connection before falling back.
    """

    def __init__(
        self,
        primary: Database,
        replica_urls: Sequence[str],
        *,
        max_lag_s: float = 5.0,
        check_interval_s: float = 1.0,
        pool_max_size: int = 8,
        pool_timeout_s: float = 2.0,
    ) -> None:
        self.primary = primary
        self.replicas = [Replica(url) for url in replica_urls]
        self.max_lag_s = max_lag_s
        self.check_interval_s = check_interval_s
        self.pool_max_size = pool_max_size
        self.pool_timeout_s = pool_timeout_s
        self.primary_served = 0
        self._lock = threading.Lock()
        self._rr = itertools.count()
        # (monotonic time, primary WAL bytes) of recent checks, oldest first
        self._history: deque[tuple[float, int]] = deque(maxlen=10_000)
        self._written: dict[str, float] = {}  # owner -> monotonic time of their last write
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.replicas:
            self.check()
            self._thread = threading.Thread(target=self._check_loop, name="visearch-replica-check", daemon=True)
            self._thread.start()

    # -- health ------------------------------------------------------------------------------
    def check(self) -> None:
        """One health pass: record the primary's WAL position, then each replica's replay position.

        Never raises for a replica; a primary that cannot be reached leaves the replicas' freshness
        as it was (reads then fail or succeed on their own)."""
        t = time.monotonic()
        try:
            with self.primary.pooled() as conn:
                lsn = int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0])
        except psycopg.Error as exc:
            log.warning("replica check: primary unreachable: %s", exc)
            return
        with self._lock:
            self._history.append((t, lsn))
        for replica in self.replicas:
            try:
                with psycopg.connect(replica.url, autocommit=True, connect_timeout=2) as conn:
                    _in_recovery, replay = conn.execute(
                        "SELECT pg_is_in_recovery(),"
                        " CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
                        " ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn"
                    ).fetchone()
            except psycopg.Error as exc:
                self._mark_down(replica, exc)
                continue
            with self._lock:
                if not replica.healthy:
                    log.info("replica %s is back", _redact(replica.url))
                replica.healthy = True
                replica.last_error = None
                replica.replay_lsn = int(replay if replay is not None else -1)
                replica.covers = self._covered_time(replica.replay_lsn)

    def _covered_time(self, replay_lsn: int) -> float:
        """Latest recorded time whose primary WAL position the replica has replayed."""
        lsns = [lsn for _, lsn in self._history]
        i = bisect.bisect_right(lsns, replay_lsn)  # WAL positions only grow
        return self._history[i - 1][0] if i else float("-inf")

    def _check_loop(self) -> None:
        while not self._stop.wait(self.check_interval_s):
            try:
                self.check()
            except Exception:  # never let the thread die: a dead checker would pin replicas
                log.exception("replica check failed")

    def _mark_down(self, replica: Replica, exc: BaseException) -> None:
        with self._lock:
            if replica.healthy:
                log.warning("replica %s is out: %s", _redact(replica.url), str(exc).strip())
            replica.healthy = False
            replica.last_error = str(exc).strip() or type(exc).__name__
            pool, replica._pool = replica._pool, None
        if pool is not None:  # closing waits for its threads: not on the request's time
            threading.Thread(target=pool.close, name="visearch-replica-close", daemon=True).start()

    # -- routing -----------------------------------------------------------------------------
    def note_write(self, owner: str) -> None:
        """Record that ``owner`` has just committed a write: their reads go to the primary until
        a replica covers this moment. Call after the commit (the HTTP API does, for every
        successful write request)."""
        with self._lock:
            self._written[owner] = time.monotonic()

    def _eligible(self, owner: str | None) -> list[Replica]:
        with self._lock:
            need = time.monotonic() - self.max_lag_s
            if owner is not None:
                need = max(need, self._written.get(owner, need))
            ok = [r for r in self.replicas if r.healthy and r.covers >= need]
            if not ok:
                return []
            start = next(self._rr) % len(ok)
            return ok[start:] + ok[:start]

    def _pool(self, replica: Replica) -> ConnectionPool:
        with self._lock:
            if replica._pool is None:
                replica._pool = ConnectionPool(
                    replica.url,
                    min_size=0,
                    max_size=self.pool_max_size,
                    timeout=self.pool_timeout_s,
                    kwargs={"prepare_threshold": None, "connect_timeout": 2},
                    configure=register_vector,
                    check=ConnectionPool.check_connection,  # a replica restarted under us
                    open=True,
                    name="visearch-replica",
                )
            return replica._pool

    def run(self, fn: Callable[[Database], T], *, owner: str | None = None) -> T:
        """``fn(handle)`` on an eligible replica; if the replica fails during it (connection lost,
        query cancelled by recovery), again on the next one, and finally on the primary.
        ``fn`` must only read. Its own errors (not found, bad request, ...) are not retried."""
        for replica in self._eligible(owner):
            try:
                return fn(_OneReplica(self, replica))
            except _RETRYABLE as exc:
                if isinstance(exc, psycopg.OperationalError):
                    self._mark_down(replica, exc)
                log.info("read retried elsewhere after %s: %s", _redact(replica.url), str(exc).strip())
        with self._lock:
            self.primary_served += 1
        return fn(self.primary)

    def status(self) -> list[dict]:
        """One dict per replica: url (password hidden), healthy, lag_s, served, last_error."""
        now = time.monotonic()
        with self._lock:
            return [
                {
                    "url": _redact(r.url), "healthy": r.healthy,
                    "lag_s": None if r.covers == float("-inf") else round(max(0.0, now - r.covers), 3),
                    "served": r.served, "last_error": r.last_error,
                }
                for r in self.replicas
            ]

    def close(self) -> None:
        """Stop the checker and close the replica pools."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for replica in self.replicas:
            with self._lock:
                pool, replica._pool = replica._pool, None
            if pool is not None:
                pool.close()


class _OneReplica:
    """A :class:`Database`-like handle pinned to one replica (used by :meth:`ReadRouter.run`)."""

    embedded = False

    def __init__(self, router: ReadRouter, replica: Replica) -> None:
        self._router, self._replica = router, replica
        self.url = replica.url

    @contextmanager
    def pooled(self) -> Iterator[psycopg.Connection]:
        with self._router._pool(self._replica).connection() as conn:
            with self._router._lock:
                self._replica.served += 1
            yield conn

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection:
        conn = psycopg.connect(self.url, autocommit=autocommit, prepare_threshold=None, connect_timeout=2)
        register_vector(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        with self.connect() as conn:
            with conn.transaction():
                yield conn


def open_read_router(primary: Database, settings) -> ReadRouter:
    """The router for ``settings.read_database_urls``; without replicas every read goes to
    ``primary`` (and no checker thread runs)."""
    return ReadRouter(
        primary, list(settings.read_database_urls),
        max_lag_s=settings.read_max_lag_seconds,
        check_interval_s=settings.read_check_interval_seconds, pool_max_size=primary.pool_max_size,
    )
