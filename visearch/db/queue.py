"""The embedding queue: claim, complete, fail and release items (SQL in ``sql/queue/``).

Protocol, for any number of workers on any number of machines:
1. :func:`claim` takes a batch with ``FOR UPDATE SKIP LOCKED`` and a lease, in its own
   transaction (so other workers see the claim at once).
2. The worker embeds the batch outside any transaction.
3. :func:`complete` deletes the queue rows it still holds and, in the same transaction, the
   caller writes their vectors; :func:`fail` records failures with a backoff.
Between batches of a bulk round the worker asks :func:`waiting` whether interactive items
(priority 0) are claimable, and if so claims those alone (``priority=INTERACTIVE``) and embeds
them before the next bulk batch.
A worker that dies between 1 and 3 loses nothing: its lease runs out and another worker claims
the items again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from visearch.resources import read_sql, sql_blocks

#: ``embedding_queue.priority``: interactive writes (another client's INSERT, a single upload)
#: are claimed before bulk backfills (an ingest, a new model's backlog); sql/schema/0006_hardening.sql.
INTERACTIVE, BULK = 0, 1


@lru_cache(maxsize=None)
def claim_statement(name: str) -> sql.Composed:
    """``claim`` or ``waiting`` of ``sql/queue/claim.sql``, with that file's one definition of a
    claimable item (its ``ready`` block) written in."""
    blocks = sql_blocks("queue/claim.sql")
    return sql.SQL(blocks[name]).format(ready=sql.SQL(blocks["ready"]))


@dataclass(frozen=True)
class Claim:
    """One claimed queue row (the columns ``claim`` of ``sql/queue/claim.sql`` returns, by name)."""

    item_kind: str  # 'image' | 'object'
    item_id: int
    enqueued_at: datetime
    attempts: int
    priority: int  # INTERACTIVE | BULK


def claim(
    conn: psycopg.Connection,
    *,
    model_id: int,
    worker: str,
    limit: int,
    lease_seconds: float,
    dataset_ids: list[int] | None = None,
    priority: int | None = None,
) -> list[Claim]:
    """Claim up to ``limit`` ready items (of ``priority`` only, if given), interactive first,
    then oldest first; commits."""
    with conn.transaction(), conn.cursor(row_factory=class_row(Claim)) as cur:
        return cur.execute(
            claim_statement("claim"),
            {
                "model_id": model_id,
                "worker": worker,
                "limit": limit,
                "lease_seconds": lease_seconds,
                "dataset_ids": dataset_ids,
                "priority": priority,
            },
        ).fetchall()


def waiting(
    conn: psycopg.Connection, *, model_id: int, priority: int | None = None,
    dataset_ids: list[int] | None = None,
) -> bool:
    """Whether :func:`claim` would find an item now (of ``priority``; ``None``: of any);
    one index probe (``waiting`` of ``sql/queue/claim.sql``)."""
    return conn.execute(
        claim_statement("waiting"),
        {"model_id": model_id, "priority": priority, "dataset_ids": dataset_ids},
    ).fetchone()[0]


def complete(
    conn: psycopg.Connection, *, model_id: int, worker: str, claims: list[Claim]
) -> set[tuple[str, int]]:
    """Dequeue finished claims still held by ``worker``; return their (kind, id).

    Claims whose item was queued again meanwhile (it changed while being embedded) are not
    returned: they stay queued and their claim is given back for another round at once.
    Call inside the transaction that writes the vectors.
    """
    if not claims:
        return set()
    rows = conn.execute(
        read_sql("queue/complete.sql"),
        {
            "model_id": model_id,
            "worker": worker,
            "kinds": [c.item_kind for c in claims],
            "ids": [c.item_id for c in claims],
            "enqueued_at": [c.enqueued_at for c in claims],
        },
    ).fetchall()
    done = {(k, i) for k, i in rows}
    changed = [c for c in claims if (c.item_kind, c.item_id) not in done]
    if changed:
        conn.execute(
            read_sql("queue/release_changed.sql"),
            {
                "model_id": model_id,
                "worker": worker,
                "kinds": [c.item_kind for c in changed],
                "ids": [c.item_id for c in changed],
            },
        )
    return done


def fail(
    conn: psycopg.Connection,
    *,
    model_id: int,
    worker: str,
    failures: list[tuple[str, int, str]],
    max_attempts: int,
    backoff_seconds: float,
) -> None:
    """Record ``(kind, id, reason)`` failures for retry with backoff, or give up after ``max_attempts``."""
    if not failures:
        return
    conn.execute(
        read_sql("queue/fail.sql"),
        {
            "model_id": model_id,
            "worker": worker,
            "kinds": [f[0] for f in failures],
            "ids": [f[1] for f in failures],
            "reasons": [f[2][:2000] for f in failures],
            "max_attempts": max_attempts,
            "backoff_seconds": backoff_seconds,
        },
    )


def release(conn: psycopg.Connection, *, model_id: int, worker: str) -> int:
    """Give back every claim ``worker`` still holds for the model; return how many."""
    cur = conn.execute(read_sql("queue/release.sql"), {"model_id": model_id, "worker": worker})
    return cur.rowcount


def queued(
    conn: psycopg.Connection, *, model_id: int | None = None, dataset_ids: list[int] | None = None
) -> dict[str, int]:
    """Items waiting to be embedded, per item kind: ``{"image": n, "object": m}``.

    The one count of the queue (``sql/queue/queued.sql``): not failed, in datasets with AI
    search enabled, of ``model_id`` (``None``: of every active model, an item counted once per
    model), in ``dataset_ids`` (``None``: all).
    """
    counts = {"image": 0, "object": 0}
    counts.update(dict(conn.execute(
        read_sql("queue/queued.sql"), {"model_id": model_id, "dataset_ids": dataset_ids}
    ).fetchall()))
    return counts
