"""Citus: turn visearch's schema into a distributed one (``visearch db distribute``).

The SQL, with the reasons for each placement, is ``sql/citus/distribute.sql``: big tables are
hash-distributed on the image id and co-located, small ones are reference tables, the queue and
the worker table stay on the coordinator (Citus local tables). Each model's HNSW index is created
on the distributed vector table as before (:func:`visearch.db.vectors`' ``ensure_hnsw_index``),
and Citus creates it on every shard, so a search runs its ranking statement per shard with that
shard's index and the coordinator merges the per-shard top k (Citus pushes ``ORDER BY distance
LIMIT k`` down when every joined table is co-located on the image id).

Run it once, on the coordinator, after ``visearch db upgrade`` and after adding the workers
(``SELECT citus_add_node(...)``); the data already there is moved to the shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import psycopg.sql

from visearch.config import Settings, get_settings
from visearch.resources import read_sql

#: Shards per distributed table: a few per worker core lets Citus rebalance and run shards in
#: parallel (Citus's own default is 32).
DEFAULT_SHARD_COUNT = 32


class CitusError(RuntimeError):
    """The server is not a Citus coordinator ready for visearch; the message says why."""


@dataclass
class Placement:
    table: str
    kind: str  # distributed | reference | coordinator (Citus local table) | local
    column: str | None  # distribution column
    colocation: int | None
    shards: int


def citus_version(conn: psycopg.Connection) -> str | None:
    """The installed ``citus`` extension's version on this server, or None."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'citus'").fetchone()
    return row[0] if row else None


def is_distributed(conn: psycopg.Connection) -> bool:
    """True once ``images`` is a distributed table (so ``distribute`` has run)."""
    if citus_version(conn) is None:
        return False
    return bool(conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass('images'))"
    ).fetchone()[0])


def distribute(url: str, *, shard_count: int = DEFAULT_SHARD_COUNT, settings: Settings | None = None) -> list[Placement]:
    """Distribute the schema at ``url`` (a Citus coordinator); return every table's placement.

    The placement is one transaction (all or nothing); then the curation functions get their
    Citus form (``sql/citus/curation.sql``), the triggers of reference tables are disabled on the
    workers' copies (``sql/citus/reference_triggers.sql``) and pgvector's search settings
    (``settings.hnsw_ef_search``, iterative scans) become every worker's defaults for the
    database. On a schema already distributed only those steps run (do it after adding a node).

    Raises:
        CitusError: no ``citus`` extension, the schema is not at the newest revision, no active
            worker node, or the coordinator is not in Citus's node list.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        if citus_version(conn) is None:
            raise CitusError("the server has no citus extension: run CREATE EXTENSION citus on "
                             "the coordinator and every worker (see README 'Scaling')")
        from visearch.db.migrate import current_revision, head_revision, is_at_head

        if not is_at_head(url):  # distribute.sql places the newest schema's tables
            raise CitusError(f"the schema is at revision {current_revision(url)}, not {head_revision()}: "
                             "run visearch db upgrade first")
        if is_distributed(conn):  # again, e.g. after adding a node: the steps after placement
            _after_placement(conn, settings or get_settings())
            return placements(conn)
        workers = conn.execute("SELECT count(*) FROM citus_get_active_worker_nodes()").fetchone()[0]
        if not workers:
            raise CitusError("no active Citus worker node: add them with citus_add_node() first")
        if not conn.execute("SELECT EXISTS (SELECT 1 FROM pg_dist_node WHERE groupid = 0)").fetchone()[0]:
            # reference tables then get a copy on the coordinator, where their triggers fire
            raise CitusError("the coordinator is not in Citus's node list: run SELECT "
                             "citus_set_coordinator_host('<its host>', <port>) on it first")
        # Triggers on distributed tables run on the shards (see distribute.sql): Citus calls this
        # "unsafe" and wants it said in the sessions that create them.
        conn.execute(psycopg.sql.SQL("ALTER DATABASE {} SET citus.enable_unsafe_triggers = on").format(
            psycopg.sql.Identifier(conn.info.dbname)))
        with conn.transaction():
            conn.execute("SET LOCAL citus.enable_unsafe_triggers = on")
            conn.execute(f"SET LOCAL citus.shard_count = {int(shard_count)}")
            conn.execute("SET LOCAL citus.multi_shard_modify_mode = 'sequential'")
            conn.execute(read_sql("citus/distribute.sql"))
        _after_placement(conn, settings or get_settings())
        return placements(conn)


def refresh_distributed_schema(url: str, settings: Settings | None = None) -> None:
    """Re-apply what ``distribute`` does after placing the tables, on a schema distributed
    already: ``visearch db upgrade`` runs it after the migrations it may run there (a migration
    re-creates the functions it changes in their one-node form)."""
    with psycopg.connect(url, autocommit=True) as conn:
        _after_placement(conn, settings or get_settings())


def _after_placement(conn: psycopg.Connection, settings: Settings) -> None:
    """The steps of ``distribute`` that may run any number of times: 0013's dataset-scoped
    neighbour lookups in the form Citus distributes (``sql/citus/curation.sql``), the reference
    tables' triggers on the coordinator only, pgvector's settings on the workers."""
    with conn.transaction():
        conn.execute(read_sql("citus/curation.sql"))
    conn.execute(read_sql("citus/reference_triggers.sql"))
    _set_hnsw_on_workers(conn, settings)


def _set_hnsw_on_workers(conn: psycopg.Connection, settings: Settings) -> None:
    """The search sets pgvector's settings per transaction with set_config(), which Citus does not
    pass on to the shards' sessions: make them the database's defaults instead (Citus propagates
    ``ALTER DATABASE ... SET`` to every worker)."""
    for name, value in (("hnsw.ef_search", settings.hnsw_ef_search), ("hnsw.iterative_scan", "relaxed_order"),
                        ("hnsw.max_scan_tuples", settings.hnsw_max_scan_tuples)):
        conn.execute(psycopg.sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            psycopg.sql.Identifier(conn.info.dbname), psycopg.sql.SQL(name), psycopg.sql.Literal(str(value))))


def placements(conn: psycopg.Connection) -> list[Placement]:
    """Where each visearch table lives (``pg_dist_partition``, shard counts)."""
    rows = conn.execute(
        """
        SELECT c.relname,
               CASE WHEN p.logicalrelid IS NULL THEN 'local'
                    WHEN p.partmethod = 'h' THEN 'distributed'
                    WHEN p.repmodel = 't' THEN 'reference'
                    ELSE 'coordinator' END,
               CASE WHEN p.partmethod = 'h' THEN column_to_column_name(p.logicalrelid, p.partkey) END,
               CASE WHEN p.partmethod = 'h' THEN p.colocationid END,
               (SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = c.oid)
        FROM pg_class c LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
          AND c.relname !~ '_[0-9]+$'
        ORDER BY 2, 1
        """
    ).fetchall()
    return [Placement(*r) for r in rows]
