"""Embedding triggered over HTTP (``POST /v1/datasets/{id}/embed``): a background thread.

Used when no ``visearch worker`` process is alive (with live workers the trigger only
notifies them). The trigger runs the same job as ``visearch embed``
(:func:`visearch.embed.embed_pending`, restricted to the requested datasets) in one background
thread of the server process, so the request returns at once (202) and
``GET /v1/datasets/{id}/status`` shows the queue shrinking. Models: as every embed run chooses
them (:func:`visearch.admin.models_to_embed`): ``pinned`` (``visearch --model X serve``) if
given, otherwise every active model, or ``Settings.model`` (``VISEARCH_MODEL``) on a fresh
database. The environment never pins, as the README says.
Triggers that arrive while it runs are merged: their datasets are drained in the next round,
so at most one embedding job runs per server process. Decoding happens in that thread
(``num_workers=0``): forking DataLoader processes from a threaded server is not safe.

Items are queued by the database itself (triggers on insert/change), so nothing is lost when
the server stops mid-job: the queue rows stay and any later ``visearch embed``, worker or
trigger picks them up (claims held by the stopped job expire with their lease).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

from visearch.config import Settings
from visearch.db.database import Database

log = logging.getLogger(__name__)


@dataclass
class EmbedJobState:
    running: bool
    pending_datasets: list[int]  # waiting for the next round
    current_datasets: list[int]  # being embedded now
    model: str  # Settings.model (the job embeds every active model unless pinned, see the module docs)
    started_at: datetime | None = None  # UTC, the current/last round's start
    finished_at: datetime | None = None  # UTC, the last round's end
    last_summary: str | None = None
    last_error: str | None = None
    embedded_total: int = 0  # items embedded by this server process's jobs
    rounds: int = 0


class EmbedJobs:
    """One background embedding thread per server process (see the module docs)."""

    def __init__(self, db: Database, settings: Settings, *, pinned: Sequence[str] = ()):
        self.db = db
        self.settings = settings
        self.pinned = list(pinned)
        self._lock = threading.Lock()
        self._pending: set[int] = set()
        self._current: list[int] = []
        self._thread: threading.Thread | None = None
        self._running = False
        self._stop = threading.Event()
        self._state = EmbedJobState(False, [], [], settings.model)

    def trigger(self, dataset_id: int) -> EmbedJobState:
        """Queue ``dataset_id`` for the job, starting the thread if idle; returns the state."""
        with self._lock:
            self._pending.add(dataset_id)
            if not self._running:  # set and cleared under the lock: no trigger is ever dropped
                self._running = True
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="visearch-embed", daemon=True)
                self._thread.start()
            return self.state()

    def state(self) -> EmbedJobState:
        return dataclasses.replace(self._state, running=self._running, pending_datasets=sorted(self._pending),
                                   current_datasets=list(self._current))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the thread has finished (tests, shutdown); True if it did."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the job to stop after its current batch and wait for it (server shutdown)."""
        self._stop.set()
        self.wait(timeout)

    def _models(self) -> list[str]:
        from visearch.admin import models_to_embed

        with self.db.pooled() as conn:
            return models_to_embed(conn, pinned=self.pinned, default=self.settings.model)

    def _run(self) -> None:
        from visearch.embed import embed_pending
        from visearch.embedding import load_model

        while True:
            with self._lock:
                if not self._pending or self._stop.is_set():
                    self._current = []
                    self._running = False
                    return
                self._current = sorted(self._pending)
                self._pending.clear()
            self._state.started_at = datetime.now(timezone.utc)
            try:
                summaries = []
                for spec in self._models():
                    model = load_model(spec, device=self.settings.device)
                    report = embed_pending(
                        self.db, model, dataset_ids=self._current, batch_size=self.settings.batch_size,
                        num_workers=0, progress=False, stop=self._stop,
                        max_pixels=self.settings.max_image_pixels, media_roots=self.settings.media_roots,
                    )
                    summaries.append(report.summary())
                    self._state.embedded_total += report.total_embedded
                self._state.last_summary = "\n".join(summaries)
                self._state.last_error = None
            except Exception as exc:  # noqa: BLE001 -- reported by the status endpoint, never lost
                log.exception("background embedding of datasets %s failed", self._current)
                self._state.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._state.finished_at = datetime.now(timezone.utc)
                self._state.rounds += 1
