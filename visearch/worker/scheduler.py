"""``visearch worker``: keeps every item embedded with every active model, continuously.

Threads of one worker process:

* **the APScheduler job** (``BackgroundScheduler``, interval trigger, ``max_instances=1``,
  ``coalesce=True``): one *pass* drains the queue of each model with
  :func:`visearch.embed.embed_pending` (claims with ``FOR UPDATE SKIP LOCKED`` and a lease, so
  any number of workers on any machines share the queue without embedding an item twice at the
  same time). The interval run is the safety net: retries whose backoff ran out and claims of
  dead workers whose lease expired send no notification.
* **the listener**: a dedicated autocommit connection that ``LISTEN``\\ s on
  ``visearch_embedding_queue`` (sent by the queue triggers in the transaction that made an item
  stale, and when a dataset's AI search is enabled) and moves the job's next run to *now*, so a
  row written by any tool is embedded within seconds. It also heartbeats ``embedding_workers``.
* **the main thread** waits for SIGINT/SIGTERM: the first lets the current batch finish and
  commit, gives the rest of the claimed items back (``embed_pending``'s ``stop``), and exits 0;
  a second one exits at once (claims then come back when their lease runs out).

With several active models (a model change in progress), a pass gives each model at most
``slice_seconds`` before moving to the next, and then passes again: the model that serves
searches keeps up with new rows while a new model works through its backlog.

Every model is loaded once per process (on first use) and kept.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import psycopg

from visearch.admin import CHANNEL, models_to_embed
from visearch.config import Settings
from visearch.db.database import Database
from visearch.db.models import register_model
from visearch.embed import RunProgress, backlog, build_missing_indexes, default_worker_id, embed_pending
from visearch.resources import read_sql

log = logging.getLogger(__name__)

JOB_ID = "embed"


class _Deadline:
    """A ``stop`` for :func:`embed_pending`: set when the worker stops or the time slice ends."""

    def __init__(self, stop: threading.Event, seconds: float | None):
        self._stop = stop
        self._until = time.monotonic() + seconds if seconds else None
        self.expired = False

    def is_set(self) -> bool:
        if self._stop.is_set():
            return True
        if self._until is not None and time.monotonic() >= self._until:
            self.expired = True
        return self.expired


class _SkipWarningFilter(logging.Filter):
    """Drop APScheduler's warning for a run that was due while the job ran: expected here (a
    long drain outlasts the interval, a wake-up lands as a run ends) and handled (see
    :meth:`EmbeddingWorker._on_max_instances`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in record.getMessage()


@dataclass
class WorkerOptions:
    """How a worker embeds. Times in seconds.

    Attributes:
        interval: seconds between scheduled passes (notifications start passes in between).
        batch_size: images per forward pass.
        claim_size: items claimed at a time (one DataLoader round); ``None``: 4 x batch_size.
        lease_seconds: how long a claim is held; a worker killed mid-batch loses its claimed
            items for at most this long. Must exceed the time one claim takes to embed.
        max_attempts: failures of an item before it is marked failed (with its reason).
        backoff_seconds: first retry delay; doubled per attempt, at most an hour.
        slice_seconds: with several active models, time given to one model per pass.
        decode_workers: DataLoader decode processes; ``None``: the pipeline default for big
            backlogs, and 0 (in-process) when at most two batches are queued, which answers a
            few fresh rows sooner than starting a process.
        heartbeat_seconds: how often the listener thread marks the worker alive.
        torch_threads: intra-op threads for inference (``torch.set_num_threads``); ``None``:
            cores divided by the live workers on this host, re-checked after every batch.
            Oversubscribed OpenMP threads spin against each other (on a 2-core machine,
            bench/bench_worker.py: two workers at torch's default drained 12.8 items/s, two
            with 1 thread each 91 items/s).
    """

    interval: float = 30.0
    batch_size: int = 64
    claim_size: int | None = None
    lease_seconds: float = 300.0
    max_attempts: int = 3
    backoff_seconds: float = 30.0
    slice_seconds: float = 60.0
    decode_workers: int | None = None
    heartbeat_seconds: float = 5.0
    torch_threads: int | None = None


class EmbeddingWorker:
    """One worker process's scheduler, listener and progress reporting.

    Args:
        db: the database (its URL is used for the worker's own connections).
        settings: ``settings.model`` is embedded when no model is registered yet (a new
            database); ``settings.device`` is the torch device.
        options: see :class:`WorkerOptions`.
        models: embed only these model specs. Default: every active model, re-read at each
            pass, so a model added while the worker runs is picked up.
        worker_id: as in ``embedding_queue.claimed_by``; default ``host:pid:random``.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        options: WorkerOptions | None = None,
        *,
        models: Sequence[str] | None = None,
        worker_id: str | None = None,
    ):
        self.db = db
        self.settings = settings
        self.options = options or WorkerOptions()
        self.worker_id = worker_id or default_worker_id()
        self._pinned: list[str] | None = list(models) if models else None
        self._stop = threading.Event()
        self._dirty = threading.Event()  # something was queued since the current pass began
        self._busy = threading.Event()  # a pass is running
        self._loaded: dict[str, object] = {}  # spec -> EmbeddingModel, loaded once per process
        self._unloadable: set[str] = set()
        self._registered: set[int] = set()  # model ids with an embedding_workers row
        self._conn: psycopg.Connection | None = None  # the job thread's connection
        self._scheduler = None
        self._job = None
        self._listener: threading.Thread | None = None
        self.passes = 0

    # ------------------------------------------------------------------ lifecycle

    def run(self, *, handle_signals: bool = True) -> None:
        """Run until :meth:`stop` (or SIGINT/SIGTERM with ``handle_signals``), then shut down
        cleanly: the running batch is committed, remaining claims are released, the worker's
        rows in ``embedding_workers`` are marked stopped.

        Raises:
            ModelWeightsNotFoundError, UnknownModelError: a pinned model cannot be loaded.
        """
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES
        from apscheduler.schedulers.background import BackgroundScheduler

        if handle_signals:
            self._install_signal_handlers()
        if self.options.torch_threads:
            import torch

            torch.set_num_threads(self.options.torch_threads)
        logging.getLogger("apscheduler.scheduler").addFilter(_SkipWarningFilter())
        with self.db.connect(autocommit=True) as conn:
            conn.execute(read_sql("status/worker_cleanup.sql"))
        for spec in self._pinned or ():
            self._model(spec, required=True)  # fail fast, before anything starts
        log.info("worker %s starting: interval %.0f s, models: %s", self.worker_id,
                 self.options.interval, ", ".join(self._pinned) if self._pinned else "every active model")
        self._scheduler = BackgroundScheduler(timezone=timezone.utc)
        self._job = self._scheduler.add_job(
            self._run_job, "interval", seconds=self.options.interval, id=JOB_ID,
            max_instances=1, coalesce=True, misfire_grace_time=None,
            next_run_time=datetime.now(timezone.utc),  # a first pass at once: drain what is queued
        )
        self._scheduler.add_listener(self._on_max_instances, EVENT_JOB_MAX_INSTANCES)
        self._scheduler.start()
        self._listener = threading.Thread(target=self._listen, name="visearch-listen", daemon=True)
        self._listener.start()
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            log.info("worker %s stopping: finishing the current batch, releasing other claims",
                     self.worker_id)
            self._stop.set()
            self._scheduler.shutdown(wait=True)  # waits for the running pass
            self._listener.join(timeout=10)
            try:
                with self.db.connect(autocommit=True) as conn:
                    conn.execute(read_sql("status/worker_stop.sql"), {"worker_id": self.worker_id})
            except psycopg.Error as exc:
                log.warning("could not mark worker stopped: %s", exc)
            log.info("worker %s stopped after %d passes", self.worker_id, self.passes)

    def stop(self) -> None:
        """Ask the worker to stop (thread-safe); :meth:`run` returns once the batch is done."""
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        owner = os.getpid()

        def handle(signum, _frame):
            if os.getpid() != owner:
                # a forked decode process (DataLoader) inherited this handler; a Ctrl-C reaches
                # the whole process group. Ignoring it lets the current batch finish: the main
                # process stops the decoders itself once the batch is written.
                return
            if self._stop.is_set():
                log.warning("second %s: exiting now; claims come back when their lease ends",
                            signal.Signals(signum).name)
                os._exit(128 + signum)
            log.info("%s received", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    # ------------------------------------------------------------------ waking the job

    def wake(self) -> None:
        """Start a pass now (or right after the running one). Thread-safe."""
        self._dirty.set()
        if self._busy.is_set():
            return  # the running pass sees _dirty and goes round again
        self._run_soon(0.0)

    def _run_soon(self, delay: float) -> None:
        from apscheduler.jobstores.base import JobLookupError
        from apscheduler.schedulers import SchedulerNotRunningError

        if self._job is None or self._stop.is_set():
            return
        try:
            self._job.modify(next_run_time=datetime.now(timezone.utc) + timedelta(seconds=delay))
        except (JobLookupError, SchedulerNotRunningError):
            pass  # shutting down

    def _on_max_instances(self, _event) -> None:
        # A run came due while the job was still running. If it is mid-pass, _dirty makes it go
        # round again. If it was just returning (busy already cleared), that wake-up would be
        # lost until the next interval: ask for a run a moment later.
        self._dirty.set()
        if not self._busy.is_set():
            self._run_soon(0.2)

    def _listen(self) -> None:
        """LISTEN on the queue channel; wake the job on each notification; heartbeat."""
        last_beat = 0.0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.db.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.wake()  # whatever was queued while we were not listening
                    while not self._stop.is_set():
                        if any(True for _ in conn.notifies(timeout=1.0, stop_after=1)):
                            # drain the burst (a COPY of many rows sends one per statement)
                            for _ in conn.notifies(timeout=0.01):
                                pass
                            log.debug("notified: waking the embed job")
                            self.wake()
                        if time.monotonic() - last_beat >= self.options.heartbeat_seconds:
                            conn.execute(read_sql("status/worker_heartbeat.sql"),
                                         {"worker_id": self.worker_id})
                            last_beat = time.monotonic()
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                log.warning("listener connection lost (%s); reconnecting in 2 s", exc)
                self._stop.wait(2.0)

    # ------------------------------------------------------------------ the job

    def _run_job(self) -> None:
        """The APScheduler job: passes until nothing is left that can be done now."""
        try:
            while not self._stop.is_set():
                self._busy.set()
                self._dirty.clear()
                try:
                    more = self._pass()
                finally:
                    self._busy.clear()
                # Check after clearing _busy: a wake-up that saw _busy set also set _dirty
                # first, so it is seen here or it scheduled a run itself (see wake()).
                if not (more or self._dirty.is_set()):
                    break
        except Exception:  # keep the scheduler alive; the next run tries again
            log.exception("embedding pass failed; retrying at the next run")
            self._close_conn()

    def _pass(self) -> bool:
        """Drain each model's queue once; True when a time slice ran out (more to do now)."""
        self.passes += 1
        conn = self._connection()
        specs = models_to_embed(conn, pinned=self._pinned or (), default=self.settings.model)
        models = [m for m in (self._model(s) for s in specs) if m is not None]
        more = False
        for model in models:
            if self._stop.is_set():
                break
            more |= self._embed_model(conn, model, sliced=len(models) > 1)
        return more

    def _embed_model(self, conn: psycopg.Connection, model, *, sliced: bool) -> bool:
        opts = self.options
        with conn.transaction():
            row = register_model(conn, model.name, model.dim, model.embeds_text)
        if row.id not in self._registered:
            conn.execute(read_sql("status/worker_register.sql"), {
                "worker_id": self.worker_id, "model_id": row.id,
                "host": socket.gethostname(), "pid": os.getpid(),
            })
            self._registered.add(row.id)
        queued = sum(backlog(self.db, row.id).values())
        if queued == 0:
            # a bulk load killed before its rebuild left the index dropped: build it now
            build_missing_indexes(conn, row.id)
            return False
        decode_workers = opts.decode_workers
        if decode_workers is None and queued <= 2 * opts.batch_size:
            decode_workers = 0
        deadline = _Deadline(self._stop, opts.slice_seconds if sliced else None)
        progress = _Progress(self, conn, row.id, model.name)
        if opts.torch_threads is None:
            self._share_cores(conn)
        report = embed_pending(
            self.db, model, batch_size=opts.batch_size,
            claim_size=opts.claim_size or 4 * opts.batch_size, num_workers=decode_workers,
            max_pixels=self.settings.max_image_pixels, media_roots=self.settings.media_roots,
            worker_id=self.worker_id, lease_seconds=opts.lease_seconds,
            max_attempts=opts.max_attempts, backoff_seconds=opts.backoff_seconds,
            progress=False, record_progress=False,
            stop=deadline, on_batch=progress,
        )
        progress.finish(report)
        return deadline.expired and not self._stop.is_set()

    def _share_cores(self, conn: psycopg.Connection) -> None:
        """Give inference cores / (live workers on this host) threads (re-checked every batch).

        Two workers each running torch's default (all cores) oversubscribe the CPU, and OpenMP
        threads spinning against each other made two workers 7x slower than one on 2 cores
        (bench/bench_worker.py); one thread each ran 1.8x faster than one worker alone.
        """
        import torch

        live = conn.execute(read_sql("status/workers_on_host.sql"), {"host": socket.gethostname()}).fetchone()[0]
        threads = max(1, (os.cpu_count() or 1) // max(1, live))
        if torch.get_num_threads() != threads:
            log.info("%d live workers on this host: %d inference threads", live, threads)
            torch.set_num_threads(threads)

    def _model(self, spec: str, *, required: bool = False):
        """The loaded model for a spec (loaded on first use), or None if it cannot be loaded."""
        model = self._loaded.get(spec)
        if model is not None or spec in self._unloadable:
            return model
        from visearch.embedding import load_model

        try:
            t0 = time.perf_counter()
            model = load_model(spec, device=self.settings.device)
        except Exception as exc:
            if required:
                raise
            self._unloadable.add(spec)  # logged once; a restart retries
            log.error("cannot load model %s, its queue is left for other workers: %s", spec, exc)
            return None
        log.info("loaded model %s (%d-d) in %.1f s", model.name, model.dim, time.perf_counter() - t0)
        self._loaded[spec] = model
        return model

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.db.connect(autocommit=True)
        return self._conn

    def _close_conn(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class _Progress:
    """``on_batch`` for :func:`embed_pending`: one log line and one progress row per batch
    (:class:`visearch.embed.RunProgress`; the worker's listener thread heartbeats)."""

    def __init__(self, worker: EmbeddingWorker, conn: psycopg.Connection, model_id: int, model_name: str):
        self.worker, self.conn, self.model_name = worker, conn, model_name
        self.run = RunProgress(worker.db, worker.worker_id, model_id, heartbeat_seconds=None)

    @property
    def rate(self) -> float | None:
        return self.run.rate

    def __call__(self, items: int, _write_seconds: float) -> None:
        if self.worker.options.torch_threads is None:
            self.worker._share_cores(self.conn)
        seconds, batch_rate, left = self.run.batch(items)
        log.info("%s: %d items in %.2f s (%.1f items/s), backlog %d",
                 self.model_name, items, seconds, batch_rate, left)

    def finish(self, report) -> None:
        by_reason: dict[str, list[str]] = {}
        for kind, item_id, reason in report.failures:
            by_reason.setdefault(reason.split(": ", 1)[0], []).append(f"{kind} {item_id}")
        for reason, items in by_reason.items():
            log.warning("%s: %d failed (%s): %s", self.model_name, len(items), reason,
                        ", ".join(items[:10]) + (" ..." if len(items) > 10 else ""))
        self.run.finish(report, state="idle")
