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


def ensure_hnsw_index(conn: psycopg.Connection, item_kind: str, model_id: int) -> str:
    """Build the model's HNSW index on the item kind's vector table if missing; return its name."""
    return conn.execute(
        "SELECT ensure_hnsw_index(%s, %s)", (vector_table(item_kind), model_id)
    ).fetchone()[0]


def drop_hnsw_index(conn: psycopg.Connection, item_kind: str, model_id: int) -> None:
    conn.execute("SELECT drop_hnsw_index(%s, %s)", (vector_table(item_kind), model_id))


def hnsw_index_exists(conn: psycopg.Connection, item_kind: str, model_id: int) -> bool:
    return conn.execute(
        "SELECT to_regclass(hnsw_index_name(%s, %s)) IS NOT NULL",
        (vector_table(item_kind), model_id),
    ).fetchone()[0]
