"""A fresh database on every node of a running Citus cluster (tests and bench_citus.py).

Citus keeps its node list per database, so a new database gets ``citus`` on each node and its
nodes registered again. ``base_url`` is a postgresql:// URL of a database on the coordinator
whose ``pg_dist_node`` lists the workers.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import make_conninfo


def create_database(base_url: str, *, workers: int | None = None, prefix: str = "visearch_test_") -> str:
    """Create the database on every node, with the coordinator and the first ``workers`` workers
    (all by default) registered; return its URL."""
    name = prefix + uuid.uuid4().hex[:8]
    with psycopg.connect(base_url, autocommit=True) as conn:
        nodes = conn.execute("SELECT nodename, nodeport, groupid FROM pg_dist_node WHERE isactive"
                             " ORDER BY groupid").fetchall()
        conn.execute("SET citus.enable_create_database_propagation = on")
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(base_url)._replace(path="/" + name))  # a URL: Alembic needs one
    coordinator = [n for n in nodes if n[2] == 0]
    chosen = [n for n in nodes if n[2] != 0][:workers]
    for host, port, _ in chosen:
        with psycopg.connect(make_conninfo(url, host=host, port=port), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS citus")
        for host, port, _ in coordinator:
            conn.execute("SELECT citus_set_coordinator_host(%s, %s)", (host, port))
        for host, port, _ in chosen:
            conn.execute("SELECT citus_add_node(%s, %s)", (host, port))
    return url


def drop_database(base_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute("SET citus.enable_create_database_propagation = on")
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
