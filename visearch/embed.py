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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.rows import namedtuple_row
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
from visearch.errors import ForbiddenError
from visearch.media import media_roots as media_roots_in_force
from visearch.media import path_from_source_uri, resolve_media_path
from visearch.resources import read_sql

log = logging.getLogger(__name__)

ITEM_KINDS = ("image", "object")

#: Items per transaction of the near-duplicate neighbour refresh that ends an embed run; between
#: them the refresh gives way to anything claimable (an HNSW k-NN lookup each: a few seconds).
REFRESH_BATCH = 256


@dataclass
class EmbedReport:
    """What one :func:`embed_pending` run did."""

    model: str
    embedded: dict[str, int] = field(default_factory=lambda: {"image": 0, "object": 0})
    #: (item_kind, item_id, reason) of items that failed this run (retried later, up to the limit)
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    seconds: float = 0.0
    remaining: int = 0
    #: times interactive items were embedded between two batches of a bulk round
    served_between: int = 0

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


def _load_items(
    conn, claims: list[queue.Claim], configured_roots: Sequence[Path] = (),
) -> tuple[list[EmbedItem], list[queue.Claim], list[tuple[str, int, str]]]:
    """Payloads for claimed items.

    Returns:
        ``(items, vanished, refused)``: what to embed; claims whose item was deleted meanwhile;
        ``(kind, id, reason)`` of reference-only items whose file lies outside the media roots
        (:func:`visearch.media.resolve_media_path`, the rule serving follows too: symlinks
        resolved first), which are never read.

    An image's boxes are listed together and share their image's bytes object, so each image
    is fetched from the database once and decoded once per batch (the pipeline keeps the last
    decoded image per worker).
    """
    image_ids = [c.item_id for c in claims if c.item_kind == "image"]
    object_ids = [c.item_id for c in claims if c.item_kind == "object"]
    with conn.cursor(row_factory=namedtuple_row) as cur:
        boxes = {
            b.id: b for b in cur.execute(read_sql("queue/object_payloads.sql"), {"ids": object_ids})
        } if object_ids else {}
        needed = list(dict.fromkeys(image_ids + [b.image_id for b in boxes.values()]))
        payloads = cur.execute(read_sql("queue/image_payloads.sql"), {"ids": needed}).fetchall() if needed else []
    roots = media_roots_in_force(conn, configured_roots) if any(p.content is None for p in payloads) else []
    sources = {p.id: _source(p.content, p.source_uri, roots) for p in payloads}
    keyed = [(("image", i), i, None) for i in image_ids]
    keyed += [(("object", b.id), b.image_id, (b.bbox_x, b.bbox_y, b.bbox_w, b.bbox_h)) for b in boxes.values()]
    items, refused = [], []
    for key, image_id, bbox in keyed:
        source = sources.get(image_id)
        if isinstance(source, str):
            refused.append((*key, source))
        elif source is not None:
            items.append(EmbedItem(key=key, bbox_xywh=bbox, **source))
    present = {item.key for item in items} | {(kind, item_id) for kind, item_id, _ in refused}
    vanished = [c for c in claims if (c.item_kind, c.item_id) not in present]
    return items, vanished, refused


def _source(content, uri: str | None, roots: Sequence[Path]) -> dict | str:
    """An :class:`EmbedItem`'s ``data=`` / ``path=``, or why the file may not be read."""
    if content is not None:
        return {"data": bytes(content)}
    try:
        return {"path": str(resolve_media_path(uri or "", roots))}
    except ForbiddenError as exc:
        return f"outside the media roots: {uri}: {exc}"  # the item fails with this reason
    except FileNotFoundError:
        # inside a root but gone (for now): the pipeline reports it, and it is retried
        return {"path": str(path_from_source_uri(uri or ""))}


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
    media_roots: Sequence[Path] = (),
    worker_id: str | None = None,
    lease_seconds: float = 600.0,
    max_attempts: int = 3,
    backoff_seconds: float = 30.0,
    bulk: bool = False,
    progress: bool = True,
    record_progress: bool = True,
    stop: threading.Event | None = None,
    on_batch: Callable[[int, float], None] | None = None,
    yield_to_interactive: bool = True,
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
        media_roots: ``Settings.media_roots`` (empty: the folders ingested from). A
            reference-only image whose file lies outside them (symlinks resolved) is never
            read: the item fails at once with the reason (:mod:`visearch.media`).
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
        yield_to_interactive: after each batch of bulk items, check (one index probe) whether
            interactive items are claimable, and if so claim and embed them before the next
            bulk batch (decoded in this process; the bulk round keeps its decode processes,
            prefetched batches and claims). An interactive write then waits for at most one
            batch (``batch_size`` items) of a backfill, not for a whole claim. ``False``: bulk
            batches run back to back (``bench/bench_priority.py`` compares the two).

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
        if bulk:
            _drop_indexes_for_bulk_load(conn, row.id, pending)
        bar = tqdm(
            total=sum(pending.values()), unit="item", desc=f"embed {model.name}",
            disable=not progress, dynamic_ncols=True,
        )
        run = _Run(
            conn=conn, model=model, row=row, worker=worker, report=report, bar=bar, recorder=recorder,
            on_batch=on_batch, stop=stop, dataset_ids=dataset_ids, batch_size=batch_size,
            num_workers=num_workers, lease_seconds=lease_seconds, crop=crop, max_pixels=max_pixels,
            media_roots=media_roots, max_attempts=max_attempts, backoff_seconds=backoff_seconds,
        )
        try:
            while not run.stopped():
                claims = run.claim(claim_size)
                if not claims:
                    break
                # Interactive items first (claimed first), in a round of their own, decoded in
                # this process when they fit one batch (no decode processes to start). Then the
                # bulk items; between their batches, interactive items written meanwhile are
                # embedded at once (serve_interactive), so they wait for one batch, not a claim.
                interactive = [c for c in claims if c.priority == queue.INTERACTIVE]
                bulk_claims = [c for c in claims if c.priority != queue.INTERACTIVE]
                if interactive:
                    run.embed(interactive, 0 if len(interactive) <= batch_size else num_workers)
                if bulk_claims and not run.stopped():
                    run.embed(bulk_claims, num_workers, run.serve_interactive if yield_to_interactive else None)
        finally:
            with conn.transaction():
                queue.release(conn, model_id=row.id, worker=worker)
            bar.close()
            try:
                build_missing_indexes(conn, row.id)
                refresh_neighbour_edges(conn, row.id, dataset_ids=dataset_ids, stop=stop)
            finally:
                report.seconds = time.perf_counter() - started
                report.remaining = sum(backlog(db, row.id, dataset_ids).values())
                if recorder is not None:
                    recorder.finish(report, state="stopped")
    return report


def _stopped(stop: threading.Event | None) -> bool:
    """Whether a run's ``stop`` (optional) is set."""
    return stop is not None and stop.is_set()


@dataclass
class _Run:
    """One :func:`embed_pending` run: what its rounds share (the connection, the model and its
    row, the claims' owner, the report and progress) and its options (documented there)."""

    conn: psycopg.Connection
    model: EmbeddingModel
    row: ModelRow
    worker: str
    report: EmbedReport
    bar: tqdm
    recorder: RunProgress | None
    on_batch: Callable[[int, float], None] | None
    stop: threading.Event | None
    dataset_ids: list[int] | None
    batch_size: int
    num_workers: int | None
    lease_seconds: float
    crop: CropSpec
    max_pixels: int
    media_roots: Sequence[Path]
    max_attempts: int
    backoff_seconds: float

    def stopped(self) -> bool:
        return _stopped(self.stop)

    def claim(self, limit: int, priority: int | None = None) -> list[queue.Claim]:
        """Up to ``limit`` ready items of the run's datasets (of ``priority`` only, if given)."""
        return queue.claim(self.conn, model_id=self.row.id, worker=self.worker, limit=limit,
                           lease_seconds=self.lease_seconds, dataset_ids=self.dataset_ids, priority=priority)

    def serve_interactive(self) -> None:
        """Between two batches of a bulk round: embed the interactive items claimable now
        (one index probe when there are none), decoded in this process. The bulk round
        keeps its decode processes and prefetched batches, and its claims."""
        if not queue.waiting(self.conn, model_id=self.row.id, priority=queue.INTERACTIVE,
                             dataset_ids=self.dataset_ids):
            return
        self.report.served_between += 1
        while not self.stopped():
            claims = self.claim(self.batch_size, queue.INTERACTIVE)
            if not claims:
                return
            self.embed(claims, 0)

    def _batch_done(self, items: int, seconds: float) -> None:
        if self.recorder is not None:
            self.recorder.batch(items)
        if self.on_batch:
            self.on_batch(items, seconds)

    def embed(self, claims: list[queue.Claim], num_workers: int | None,
              between_batches: Callable[[], None] | None = None) -> None:
        """Embed one round of claims with ``num_workers`` decode processes, committing batch by
        batch; ``between_batches()`` runs after each batch but the last."""
        conn, row, worker, report, bar = self.conn, self.row, self.worker, self.report, self.bar
        by_key = {(c.item_kind, c.item_id): c for c in claims}
        items, vanished, refused = _load_items(conn, claims, self.media_roots)
        if vanished or refused:
            with conn.transaction():
                # deleted after being queued: nothing to embed
                queue.complete(conn, model_id=row.id, worker=worker, claims=vanished)
                # a file outside the media roots is never read, and retrying cannot help until the
                # roots change: failed at once, with the reason (visearch status lists it)
                queue.fail(conn, model_id=row.id, worker=worker, failures=refused, max_attempts=1,
                           backoff_seconds=self.backoff_seconds)
            report.failures += refused
            bar.update(len(vanished) + len(refused))
        batches = iter_embedded_batches(
            items, self.model, batch_size=self.batch_size, num_workers=num_workers, crop=self.crop,
            max_pixels=self.max_pixels,
        )
        left = len(items)
        try:
            for batch in batches:
                t0 = time.perf_counter()
                left -= len(batch.keys) + len(batch.failures)
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
                        max_attempts=self.max_attempts, backoff_seconds=self.backoff_seconds,
                    )
                    report.failures += failures
                bar.update(len(batch.keys) + len(batch.failures))
                self._batch_done(len(batch.keys), time.perf_counter() - t0)
                if self.stopped():
                    return
                if left and between_batches is not None:
                    between_batches()
        finally:
            batches.close()  # stops the decode processes at once when the round ends early


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


def refresh_neighbour_edges(
    conn, model_id: int, *, dataset_ids: list[int] | None = None, stop: threading.Event | None = None,
    batch: int = REFRESH_BATCH,
) -> int:
    """Near-duplicate edges of the vectors written since the last refresh (an HNSW k-NN lookup
    of each new item: :func:`visearch.curation.duplicates.refresh_neighbours`), ``batch`` items
    per transaction, giving way after each batch to anything claimable (of ``dataset_ids``) or
    a ``stop``: a row written meanwhile waits for one batch, not for the edges of a whole
    backfill (a 10k backfill's refresh once held a new row for minutes). What is left stays in
    ``neighbour_pending`` for the next run. Returns the items processed.
    """
    from visearch.curation.duplicates import refresh_neighbours

    return refresh_neighbours(
        conn, model_id, batch=batch,
        until=lambda: _stopped(stop) or queue.waiting(conn, model_id=model_id, dataset_ids=dataset_ids),
    )


def _drop_indexes_for_bulk_load(conn, model_id: int, pending: dict[str, int]) -> None:
    for kind in ITEM_KINDS:
        stored = conn.execute(
            f"SELECT count(*) FROM {vector_table(kind)} WHERE model_id = %s", (model_id,)
        ).fetchone()[0]
        if pending[kind] > stored:
            log.info("bulk load of %d %s vectors: HNSW index rebuilt afterwards", pending[kind], kind)
            drop_hnsw_index(conn, kind, model_id)
