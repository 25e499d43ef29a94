"""The embedding job: drain the embedding queue for one model.

Used by ``visearch embed`` (drain once, with a progress bar) and by the worker (issue: keep
embeddings fresh), which calls :func:`embed_pending` on a schedule. Each round claims a chunk
of queued items (see :mod:`visearch.db.queue`), decodes and crops them in DataLoader worker
processes while the model runs (:func:`visearch.embedding.pipeline.iter_embedded_batches`),
and writes each batch's vectors and dequeues its items in one transaction.

A large first load (more queued items than vectors already stored) drops the model's HNSW
index and rebuilds it afterwards: pgvector builds an index over 100k vectors in ~20 s, while
inserting the same rows into an indexed table runs at under 1k rows/s.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm import tqdm

from visearch.db import queue
from visearch.db.database import Database
from visearch.db.models import ModelRow, register_model
from visearch.db.vectors import (
    drop_hnsw_index,
    ensure_hnsw_index,
    hnsw_index_exists,
    vector_table,
    write_vectors,
)
from visearch.embedding import CropSpec, EmbeddingModel
from visearch.embedding.pipeline import EmbedItem, iter_embedded_batches
from visearch.ingest.files import path_from_source_uri
from visearch.resources import read_sql

log = logging.getLogger(__name__)

ITEM_KINDS = ("image", "object")


@dataclass
class EmbedReport:
    """What one :func:`embed_pending` run did."""

    model: str
    embedded: dict[str, int] = field(default_factory=lambda: {"image": 0, "object": 0})
    #: (item_kind, item_id, reason) of items that failed this run (retried later, up to the limit)
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    seconds: float = 0.0
    remaining: int = 0

    @property
    def total_embedded(self) -> int:
        return sum(self.embedded.values())

    def summary(self) -> str:
        rate = self.total_embedded / self.seconds if self.seconds else 0.0
        lines = [
            f"model {self.model}: embedded {self.embedded['image']} images and "
            f"{self.embedded['object']} objects in {self.seconds:.1f} s ({rate:.1f} items/s)"
        ]
        if self.failures:
            lines.append(f"{len(self.failures)} failed (retried later, up to the attempt limit):")
            lines += [f"  {kind} {item_id}: {reason}" for kind, item_id, reason in self.failures[:20]]
        if self.remaining:
            lines.append(f"{self.remaining} items still queued (claimed elsewhere or backing off)")
        return "\n".join(lines)


def default_worker_id() -> str:
    """``host:pid:random``: unique per process, readable in ``embedding_queue.claimed_by``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def backlog(db: Database, model_id: int, dataset_ids: list[int] | None = None) -> dict[str, int]:
    """Items queued and not failed for the model, per item kind."""
    with db.pooled() as conn:
        rows = conn.execute(
            "SELECT item_kind, count(*) FROM embedding_queue q JOIN datasets d ON d.id = q.dataset_id"
            " WHERE model_id = %s AND NOT failed AND d.search_enabled"
            " AND (%s::bigint[] IS NULL OR dataset_id = ANY(%s::bigint[])) GROUP BY item_kind",
            (model_id, dataset_ids, dataset_ids),
        ).fetchall()
    counts = {kind: 0 for kind in ITEM_KINDS}
    counts.update(dict(rows))
    return counts


def _load_items(conn, claims: list[queue.Claim]) -> tuple[list[EmbedItem], list[queue.Claim]]:
    """Payloads for claimed items; claims whose item was deleted meanwhile come back separately.

    Boxes are listed image by image and share their image's bytes object, so each image is
    fetched from the database once and decoded once per batch (the pipeline keeps the last
    decoded image per worker).
    """
    image_ids = [c.item_id for c in claims if c.item_kind == "image"]
    object_ids = [c.item_id for c in claims if c.item_kind == "object"]
    boxes = (
        conn.execute(read_sql("queue/object_payloads.sql"), {"ids": object_ids}).fetchall()
        if object_ids else []
    )
    needed = list(dict.fromkeys(image_ids + [b[1] for b in boxes]))
    sources = {
        image_id: _source(content, uri)
        for image_id, content, uri in conn.execute(read_sql("queue/image_payloads.sql"), {"ids": needed})
    } if needed else {}
    items = [EmbedItem(key=("image", i), **sources[i]) for i in image_ids if i in sources]
    items += [
        EmbedItem(key=("object", ann_id), bbox_xywh=(x, y, w, h), **sources[image_id])
        for ann_id, image_id, x, y, w, h in boxes
        if image_id in sources
    ]
    found = {item.key for item in items}
    vanished = [c for c in claims if (c.item_kind, c.item_id) not in found]
    return items, vanished


def _source(content, uri) -> dict:
    if content is not None:
        return {"data": bytes(content)}
    try:
        return {"path": str(path_from_source_uri(uri or ""))}
    except ValueError:
        # another tool wrote a plain path (or something unreadable): that item fails with the
        # pipeline's reason, the rest of the batch goes on
        return {"path": uri or ""}


def embed_pending(
    db: Database,
    model: EmbeddingModel,
    *,
    dataset_ids: list[int] | None = None,
    batch_size: int = 64,
    claim_size: int = 1024,
    num_workers: int | None = None,
    crop: CropSpec = CropSpec(),
    worker_id: str | None = None,
    lease_seconds: float = 600.0,
    max_attempts: int = 3,
    backoff_seconds: float = 30.0,
    bulk_load_min_items: int = 5000,
    progress: bool = True,
    stop: threading.Event | None = None,
    on_batch: Callable[[int, float], None] | None = None,
) -> EmbedReport:
    """Embed every queued image and box for ``model`` until the queue is empty (or ``stop`` is set).

    Args:
        db: the database.
        model: the loaded embedding model; registered (and its backlog queued) if new.
        dataset_ids: only these datasets (``None``: all with AI search enabled).
        batch_size: images per forward pass.
        claim_size: items claimed per round; a round's items are decoded while the model runs.
        num_workers: DataLoader decode processes (``None``: the pipeline's default).
        crop: how boxes become crops (context margin, squaring); the same rule serves queries.
        lease_seconds: how long a claim is held before another worker may take it over.
        max_attempts: failures before an item is marked failed (with its last reason).
        bulk_load_min_items: a backlog at least this big, and bigger than the vectors already
            stored, is loaded with the HNSW index dropped and rebuilt after.
        on_batch: called with (items written, seconds) after each committed batch.

    Returns:
        An :class:`EmbedReport`. Failures are recorded in ``embedding_queue`` (``last_error``,
        ``attempts``, ``failed``) and never stop the run.
    """
    worker = worker_id or default_worker_id()
    report = EmbedReport(model=model.name)
    started = time.perf_counter()
    with db.connect(autocommit=True) as conn:
        with conn.transaction():
            row: ModelRow = register_model(conn, model.name, model.dim, model.embeds_text)
        pending = backlog(db, row.id, dataset_ids)
        rebuild = _drop_indexes_for_bulk_load(conn, row.id, pending, bulk_load_min_items)
        bar = tqdm(
            total=sum(pending.values()), unit="item", desc=f"embed {model.name}",
            disable=not progress, dynamic_ncols=True,
        )
        try:
            while not (stop and stop.is_set()):
                claims = queue.claim(
                    conn, model_id=row.id, worker=worker, limit=claim_size,
                    lease_seconds=lease_seconds, dataset_ids=dataset_ids,
                )
                if not claims:
                    break
                _embed_claims(
                    conn, model, row, worker, claims, report, batch_size=batch_size,
                    num_workers=num_workers, crop=crop, max_attempts=max_attempts,
                    backoff_seconds=backoff_seconds, bar=bar, stop=stop, on_batch=on_batch,
                )
        finally:
            with conn.transaction():
                queue.release(conn, model_id=row.id, worker=worker)
            bar.close()
            for kind in ITEM_KINDS:  # cheap catalog lookups first: the worker passes here often
                if kind in rebuild or (
                    not hnsw_index_exists(conn, kind, row.id) and _has_vectors(conn, kind, row.id)
                ):
                    ensure_hnsw_index(conn, kind, row.id)
            # near-duplicate edges of the vectors just written (HNSW k-NN of each new item only)
            from visearch.curation.duplicates import refresh_neighbours

            refresh_neighbours(conn, row.id)
    report.seconds = time.perf_counter() - started
    report.remaining = sum(backlog(db, row.id, dataset_ids).values())
    return report


def _has_vectors(conn, kind: str, model_id: int) -> bool:
    return conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM {vector_table(kind)} WHERE model_id = %s)", (model_id,)
    ).fetchone()[0]


def _drop_indexes_for_bulk_load(conn, model_id: int, pending: dict[str, int], min_items: int) -> set[str]:
    rebuild = set()
    for kind in ITEM_KINDS:
        stored = conn.execute(
            f"SELECT count(*) FROM {vector_table(kind)} WHERE model_id = %s", (model_id,)
        ).fetchone()[0]
        if pending[kind] >= min_items and pending[kind] > stored:
            log.info("bulk load of %d %s vectors: HNSW index rebuilt afterwards", pending[kind], kind)
            drop_hnsw_index(conn, kind, model_id)
            rebuild.add(kind)
    return rebuild


def _embed_claims(
    conn, model, row: ModelRow, worker: str, claims: list[queue.Claim], report: EmbedReport, *,
    batch_size, num_workers, crop, max_attempts, backoff_seconds, bar, stop, on_batch,
) -> None:
    by_key = {(c.item_kind, c.item_id): c for c in claims}
    items, vanished = _load_items(conn, claims)
    if vanished:  # deleted after being queued: nothing to embed
        with conn.transaction():
            queue.complete(conn, model_id=row.id, worker=worker, claims=vanished)
        bar.update(len(vanished))
    for batch in iter_embedded_batches(
        items, model, batch_size=batch_size, num_workers=num_workers, crop=crop
    ):
        t0 = time.perf_counter()
        with conn.transaction():
            done = queue.complete(
                conn, model_id=row.id, worker=worker, claims=[by_key[k] for k in batch.keys]
            )
            for kind in ITEM_KINDS:
                idx = [i for i, k in enumerate(batch.keys) if k[0] == kind and k in done]
                if idx:
                    write_vectors(
                        conn, model_id=row.id, item_kind=kind,
                        item_ids=[batch.keys[i][1] for i in idx], vectors=batch.vectors[idx],
                    )
                    report.embedded[kind] += len(idx)
            failures = [(key[0], key[1], reason) for key, reason in batch.failures]
            queue.fail(
                conn, model_id=row.id, worker=worker, failures=failures,
                max_attempts=max_attempts, backoff_seconds=backoff_seconds,
            )
            report.failures += failures
        bar.update(len(batch.keys) + len(batch.failures))
        if on_batch:
            on_batch(len(batch.keys), time.perf_counter() - t0)
        if stop and stop.is_set():
            break
