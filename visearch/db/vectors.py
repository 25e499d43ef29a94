"""Writing vectors: binary COPY into a temp table, then one upsert per vector table.

COPY is the fastest way into PostgreSQL (pgvector-python ``examples/loading``); the staging
table lets re-embedded items replace their old vector (``ON CONFLICT DO UPDATE``).
"""

from __future__ import annotations

import numpy as np
import psycopg

from visearch.resources import read_sql

_VECTOR_TABLE = {"image": "image_embeddings", "object": "object_embeddings"}


def vector_table(item_kind: str) -> str:
    """``'image'`` -> ``image_embeddings``, ``'object'`` -> ``object_embeddings``."""
    return _VECTOR_TABLE[item_kind]


def write_vectors(
    conn: psycopg.Connection,
    *,
    model_id: int,
    item_kind: str,
    item_ids: list[int],
    vectors: np.ndarray,
) -> int:
    """Upsert ``vectors[i]`` as the embedding of item ``item_ids[i]``; return rows written.

    Args:
        vectors: float32 array of shape ``(len(item_ids), dim)``, rows of unit L2 norm (the
            tables' CHECK constraint rejects anything else).
    Must run inside a transaction (the temp table is emptied at commit).
    """
    if not item_ids:
        return 0
    if vectors.shape[0] != len(item_ids):
        raise ValueError(f"{len(item_ids)} ids but {vectors.shape[0]} vectors")
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS staged_vectors (item_id bigint, embedding vector)"
        " ON COMMIT DELETE ROWS"
    )
    conn.execute("TRUNCATE staged_vectors")
    with conn.cursor().copy(
        "COPY staged_vectors (item_id, embedding) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int8", "vector"])
        for item_id, vec in zip(item_ids, vectors.astype(np.float32, copy=False)):
            copy.write_row([item_id, vec])
    sql = read_sql(f"vectors/upsert_{vector_table(item_kind)}.sql")
    return conn.execute(sql, {"model_id": model_id, "ids": list(item_ids)}).rowcount


def hnsw_build_params(dim: int) -> dict[str, int]:
    """HNSW build parameters for a model of dimension ``dim``: ``{"m": ..., "ef_construction": ...}``.

    The one place they are chosen: :func:`build_hnsw_index` renders them into
    ``sql/vectors/create_hnsw_index.sql``. Below 512 dimensions, pgvector's defaults (m = 16,
    ef_construction = 64). From 512 (CLIP's ViT-B) up, a denser graph built with a wider beam:
    with the defaults, 1280-d EfficientNet vectors of 9,145 Caltech-101 images had mean
    recall@10 0.999 at ef_search 100, yet two queries found none of their exact top 10 and five
    not even themselves; and at 1,000,000 x 512-d (``bench/bench_search.py --size 1000000 --dim
    512 --ef-search 100,200,400,800``, 100 queries) the defaults' graph stayed at recall@10
    0.941 even at ef_search 800 (2% of queries below 0.5), while m 24 / ef_construction 128
    reached 0.988 at ef_search 200 (0.991 at 800 with a 10% filter): the search's ef_search
    rule (``visearch.search.service.hnsw_ef_search``) needs this graph to hold 0.98 at that
    size. Recall rises with M and efConstruction, more so in high dimension (Malkov & Yashunin
    2018, arXiv:1603.09320, sec. 4); the cost is build time and memory (the 1M x 512-d build:
    1,118 s against 299 s with the defaults, on a quiet 2-core machine), not query time at a
    given ef_search.
    """
    if dim >= 512:
        return {"m": 24, "ef_construction": 128}
    return {"m": 16, "ef_construction": 64}


def hnsw_index_name(item_kind: str, model_id: int) -> str:
    """``image_embeddings_hnsw_model_3``: as SQL's ``hnsw_index_name()`` (0001_hnsw.sql) names it."""
    return f"{vector_table(item_kind)}_hnsw_model_{int(model_id)}"


def hnsw_index_state(conn: psycopg.Connection, item_kind: str, model_id: int) -> str:
    """``"ready"``, ``"missing"``, or ``"invalid"`` (a ``CREATE INDEX CONCURRENTLY`` that is
    still running, or that was interrupted and left an unusable index behind)."""
    row = conn.execute(
        "SELECT i.indisvalid AND i.indisready FROM pg_index i"
        " WHERE i.indexrelid = to_regclass(%s)", (hnsw_index_name(item_kind, model_id),),
    ).fetchone()
    if row is None:
        return "missing"
    return "ready" if row[0] else "invalid"


def hnsw_index_exists(conn: psycopg.Connection, item_kind: str, model_id: int) -> bool:
    """Whether the model's HNSW index exists and can serve queries (built and valid)."""
    return hnsw_index_state(conn, item_kind, model_id) == "ready"


# Builds of one index are serialised across processes with this advisory lock class (the second
# key is the index's oid-independent number: kind and model).
_BUILD_LOCK = 0x76696478  # "vidx"


def _lock_key(item_kind: str, model_id: int) -> int:
    return int(model_id) * 2 + (1 if item_kind == "object" else 0)


def build_hnsw_index(
    conn: psycopg.Connection, item_kind: str, model_id: int, *, parallel_workers: int | None = None,
    params: dict[str, int] | None = None,
) -> bool:
    """Build the model's HNSW index on the item kind's vector table unless it is there.

    On an autocommit connection outside a transaction the build is ``CREATE INDEX
    CONCURRENTLY`` (searches and vector writes go on meanwhile) with
    ``max_parallel_maintenance_workers`` set to ``parallel_workers`` (default: the CPUs of this
    machine minus one, at most 7, as PostgreSQL's own cap); inside a transaction it is a plain
    ``CREATE INDEX`` (tests, migrations). An invalid index left by an interrupted concurrent build
    is dropped and built again. When another process is building it right now (advisory lock
    held), nothing is done. The DDL is ``sql/vectors/create_hnsw_index.sql``; the parameters come
    from :func:`hnsw_build_params` unless ``params`` (``{"m": .., "ef_construction": ..}``) names
    others (benchmarks comparing builds).

    Returns:
        True if this call built the index.
    Raises:
        psycopg.Error: the build failed (e.g. out of memory); an interrupted concurrent build
            leaves an invalid index that the next call replaces.
    """
    import os

    from psycopg import sql

    from visearch.resources import read_sql

    concurrent = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if concurrent:
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                           (_BUILD_LOCK, _lock_key(item_kind, model_id))).fetchone()[0]
        if not got:
            return False  # another process is building it
    try:
        state = hnsw_index_state(conn, item_kind, model_id)
        if state == "ready":
            return False
        name = hnsw_index_name(item_kind, model_id)
        if state == "invalid":  # an interrupted CONCURRENTLY build (we hold the build lock)
            conn.execute(sql.SQL("DROP INDEX {} IF EXISTS {}").format(
                sql.SQL("CONCURRENTLY") if concurrent else sql.SQL(""), sql.Identifier(name)))
        dim = conn.execute("SELECT dim FROM embedding_models WHERE id = %s", (model_id,)).fetchone()[0]
        params = params or hnsw_build_params(dim)
        workers = parallel_workers if parallel_workers is not None else min(7, max(0, (os.cpu_count() or 1) - 1))
        ddl = sql.SQL(read_sql("vectors/create_hnsw_index.sql")).format(
            concurrently=sql.SQL("CONCURRENTLY") if concurrent else sql.SQL(""),
            index=sql.Identifier(name), table=sql.Identifier(vector_table(item_kind)),
            dim=sql.Literal(int(dim)), m=sql.Literal(int(params["m"])),
            ef_construction=sql.Literal(int(params["ef_construction"])), model_id=sql.Literal(int(model_id)),
        )
        # for this build only: SET LOCAL inside a transaction, SET + RESET around it otherwise
        conn.execute(sql.SQL("SET {} max_parallel_maintenance_workers = {}").format(
            sql.SQL("SESSION") if concurrent else sql.SQL("LOCAL"), sql.Literal(int(workers))))
        try:
            conn.execute(ddl)
        finally:
            if concurrent:
                conn.execute("RESET max_parallel_maintenance_workers")
        return True
    finally:
        if concurrent:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_BUILD_LOCK, _lock_key(item_kind, model_id)))


def ensure_hnsw_index(conn: psycopg.Connection, item_kind: str, model_id: int, *,
                      params: dict[str, int] | None = None) -> str:
    """Build the model's HNSW index if missing (:func:`build_hnsw_index`); return its name."""
    build_hnsw_index(conn, item_kind, model_id, params=params)
    return hnsw_index_name(item_kind, model_id)


def drop_hnsw_index(conn: psycopg.Connection, item_kind: str, model_id: int) -> None:
    """Drop the model's HNSW index (bulk loads only: ``visearch embed --bulk``)."""
    conn.execute("SELECT drop_hnsw_index(%s, %s)", (vector_table(item_kind), model_id))
