"""The embedding job: drain the embedding queue for one model.

Used by ``visearch embed`` (drain once, with a progress bar) and by the worker (issue: keep
embeddings fresh), which calls :func:`embed_pending` on a schedule. Each round claims a chunk
of queued items (see :mod:`visearch.db.queue`), decodes and crops them in DataLoader worker
processes while the model runs (:func:`visearch.embedding.pipeline.iter_embedded_batches`),
and writes each batch's vectors and dequeues its items in one transaction.

An explicit bulk load (``visearch embed --bulk``, ``bulk=True``) drops the model's HNSW index
and rebuilds it afterwards: pgvector builds an index over 100k vectors in ~20 s, while
inserting the same rows into an indexed table runs at under 1k rows/s. Nothing else ever drops
an index (the API server's job and the workers insert into it, so searches keep being served).
Every run ends by building any of the model's indexes that are missing or invalid (a bulk load
that was killed before its rebuild, an interrupted build) with ``CREATE INDEX CONCURRENTLY``
(:func:`visearch.db.vectors.build_hnsw_index`); a worker with an empty queue does the same.
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

import psycopg
from tqdm import tqdm

from visearch.db import queue
from visearch.db.database import Database
from visearch.db.models import ModelRow, register_model
from visearch.db.vectors import (
    build_hnsw_index,
    drop_hnsw_index,
    hnsw_index_exists,
    vector_table,
    write_vectors,
)
from visearch.embedding import CropSpec, EmbeddingModel
from visearch.embedding.decode import DEFAULT_MAX_PIXELS
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
    """Items queued for the model, per item kind (:func:`visearch.db.queue.queued`)."""
    with db.pooled() as conn:
        return queue.queued(conn, model_id=model_id, dataset_ids=dataset_ids)


class RunProgress:
    """An embed run's row in ``embedding_workers``, so ``visearch status`` shows its rate and an
    ETA whether it is a ``visearch worker`` or a one-off ``visearch embed`` / HTTP job.

    The rate is items per second of wall time between batch commits (decoding and inference
    included), smoothed over batches (exponential moving average, weight 0.3 on the newest).
    SQL: ``sql/status/worker_register.sql``, ``worker_progress.sql``, ``worker_heartbeat.sql``,
    ``worker_stop.sql``.

    Args:
        db: the database (progress rows are written on pooled connections, committed at once).
        worker_id: the run's id, as in ``embedding_queue.claimed_by``.
        model_id: the model being embedded.
        heartbeat_seconds: how often a background thread marks the run alive while a batch
            is being embedded (``None``: no thread; ``visearch worker`` beats on its own).
    """

    def __init__(self, db: Database, worker_id: str, model_id: int, *, heartbeat_seconds: float | None = 5.0):
        self.db, self.worker_id, self.model_id = db, worker_id, model_id
        self.rate: float | None = None
        self.items = 0
        self.last = time.perf_counter()
        self._heartbeat_seconds = heartbeat_seconds
        self._stop_beat = threading.Event()
        self._beat: threading.Thread | None = None

    def start(self) -> None:
        """Register the run (state idle) and start the heartbeat thread."""
        self._execute("status/worker_register.sql", host=socket.gethostname(), pid=os.getpid())
        self.last = time.perf_counter()
        if self._heartbeat_seconds:
            self._beat = threading.Thread(target=self._heartbeat, name="visearch-embed-heartbeat", daemon=True)
            self._beat.start()

    def batch(self, items: int) -> tuple[float, float, int]:
        """Record a committed batch of ``items``; return (seconds since the last batch, that
        batch's rate in items/s, the model's remaining backlog)."""
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        batch_rate = items / seconds if seconds > 0 else 0.0
        self.rate = batch_rate if self.rate is None else 0.3 * batch_rate + 0.7 * self.rate
        self.items += items
        left = sum(backlog(self.db, self.model_id).values())
        self.update(state="embedding", items=items, failures=0, rate=self.rate, backlog=left)
        return seconds, batch_rate, left

    def update(self, **values) -> None:
        """Set state, add items/failures, set rate/backlog (``sql/status/worker_progress.sql``)."""
        self._execute("status/worker_progress.sql", **values)

    def finish(self, report: EmbedReport, *, state: str = "idle") -> None:
        """Record the run's failures and remaining backlog; ``state`` ``"stopped"`` ends the row."""
        self._stop_beat.set()
        if self._beat is not None:
            self._beat.join(10)
            self._beat = None
        self.update(state="idle", items=0, failures=len(report.failures), rate=None, backlog=report.remaining)
        if state == "stopped":
            self._execute("status/worker_stop.sql")

    def _heartbeat(self) -> None:
        while not self._stop_beat.wait(self._heartbeat_seconds):
            self._execute("status/worker_heartbeat.sql")

    def _execute(self, sql_file: str, **values) -> None:
        try:
            with self.db.pooled() as conn:
                conn.execute(read_sql(sql_file), {"worker_id": self.worker_id, "model_id": self.model_id, **values})
        except psycopg.Error as exc:  # progress is informative; never fail a batch over it
            log.warning("could not record progress: %s", exc)


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
    max_pixels: int = DEFAULT_MAX_PIXELS,
    worker_id: str | None = None,
    lease_seconds: float = 600.0,
    max_attempts: int = 3,
    backoff_seconds: float = 30.0,
    bulk: bool = False,
    progress: bool = True,
    record_progress: bool = True,
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
        max_pixels: the decode limit; pass ``Settings.max_image_pixels``, the limit ingest and
            uploads use, so an image that was accepted is never refused here.
        lease_seconds: how long a claim is held before another worker may take it over.
        max_attempts: failures before an item is marked failed (with its last reason).
        bulk: drop the model's HNSW index of each item kind with a backlog bigger than the
            vectors already stored, and rebuild it after the load (``visearch embed --bulk``
            only: searches of that model and kind scan exactly meanwhile).
        progress: show a progress bar (tqdm) on stderr.
        record_progress: keep a row for this run in ``embedding_workers`` (:class:`RunProgress`)
            so ``visearch status`` shows it with its rate and an ETA; ``visearch worker`` keeps
            its own row and passes False.
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
        recorder = RunProgress(db, worker, row.id) if record_progress else None
        if recorder is not None:
            recorder.start()

            def recorded(items: int, seconds: float, _user=on_batch) -> None:
                recorder.batch(items)
                if _user:
                    _user(items, seconds)

            on_batch = recorded
        if bulk:
            _drop_indexes_for_bulk_load(conn, row.id, pending)
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
                    num_workers=num_workers, crop=crop, max_pixels=max_pixels, max_attempts=max_attempts,
                    backoff_seconds=backoff_seconds, bar=bar, stop=stop, on_batch=on_batch,
                )
        finally:
            with conn.transaction():
                queue.release(conn, model_id=row.id, worker=worker)
            bar.close()
            try:
                build_missing_indexes(conn, row.id)
                # near-duplicate edges of the vectors just written (HNSW k-NN of each new item only)
                from visearch.curation.duplicates import refresh_neighbours

                refresh_neighbours(conn, row.id)
            finally:
                report.seconds = time.perf_counter() - started
                report.remaining = sum(backlog(db, row.id, dataset_ids).values())
                if recorder is not None:
                    recorder.finish(report, state="stopped")
    return report


def _has_vectors(conn, kind: str, model_id: int) -> bool:
    return conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM {vector_table(kind)} WHERE model_id = %s)", (model_id,)
    ).fetchone()[0]


def build_missing_indexes(conn, model_id: int) -> list[str]:
    """Build the model's HNSW indexes that are missing or invalid while it has vectors of that
    kind (a bulk load killed before its rebuild; an interrupted build); return the kinds built.

    ``conn`` should be an autocommit connection outside a transaction, so the build is
    ``CREATE INDEX CONCURRENTLY`` (see :func:`visearch.db.vectors.build_hnsw_index`). Cheap when
    nothing is missing (two catalog lookups): every embed run and idle worker pass calls it.
    """
    built = []
    for kind in ITEM_KINDS:
        if not hnsw_index_exists(conn, kind, model_id) and _has_vectors(conn, kind, model_id):
            log.info("building the HNSW index of model %s on %s vectors", model_id, kind)
            if build_hnsw_index(conn, kind, model_id):
                built.append(kind)
    return built


def _drop_indexes_for_bulk_load(conn, model_id: int, pending: dict[str, int]) -> None:
    for kind in ITEM_KINDS:
        stored = conn.execute(
            f"SELECT count(*) FROM {vector_table(kind)} WHERE model_id = %s", (model_id,)
        ).fetchone()[0]
        if pending[kind] > stored:
            log.info("bulk load of %d %s vectors: HNSW index rebuilt afterwards", pending[kind], kind)
            drop_hnsw_index(conn, kind, model_id)


def _embed_claims(
    conn, model, row: ModelRow, worker: str, claims: list[queue.Claim], report: EmbedReport, *,
    batch_size, num_workers, crop, max_pixels, max_attempts, backoff_seconds, bar, stop, on_batch,
) -> None:
    by_key = {(c.item_kind, c.item_id): c for c in claims}
    items, vanished = _load_items(conn, claims)
    if vanished:  # deleted after being queued: nothing to embed
        with conn.transaction():
            queue.complete(conn, model_id=row.id, worker=worker, claims=vanished)
        bar.update(len(vanished))
    for batch in iter_embedded_batches(
        items, model, batch_size=batch_size, num_workers=num_workers, crop=crop, max_pixels=max_pixels
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
