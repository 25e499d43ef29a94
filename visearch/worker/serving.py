"""Which model answers a search, and how much of the searched datasets it can see yet.

Called by :func:`visearch.search.service.search` for every request.

**Serving model** (the model used when a request names none; SQL and rule in
``sql/status/serving_model.sql``): among active models (and only text-capable ones for a text
query), the most recently activated one that *covers* the searched datasets, i.e. has no stale
item there (no queue row that is not failed); if none covers them, the one with the fewest
stale items. So after ``visearch model add NEW`` the workers embed everything with NEW in the
background while searches keep using the previous model; NEW serves a dataset from the moment
its last item there is embedded (or given up on). Both models' vectors stay queryable by name
(``SearchRequest.model``; on the command line ``visearch --model NAME search ...``). A model
named by the request is used as is. ``Settings.model`` (``VISEARCH_MODEL``) is only the
fallback when no model is active: it names the model ``visearch embed`` uses and the one a new
database starts with, so a deployment that sets it (docker-compose does) still switches models
without an outage.

**Coverage** (:class:`Coverage`): while the searched datasets still have items without a vector
for the model, a search still answers, from the items that have one, and says so:
``SearchResult.coverage`` holds the counts and ``SearchResult.note`` a sentence such as
"embeddings are still being prepared for model efficientnet-lite0: 40 of 128 images can be
searched (88 queued)". When every item is searchable ``coverage`` is ``None`` (checked with one
index probe; counting only happens when something is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import psycopg

from visearch.config import Settings
from visearch.db.models import ModelRow, get_model
from visearch.resources import read_sql

_NOUN = {"image": ("image", "images"), "object": ("object", "objects")}


@dataclass
class Coverage:
    """How much of the searched datasets a search could see (items of the searched kind).

    Attributes:
        kind: ``'image'`` or ``'object'``.
        total: items of that kind in the searched datasets.
        ready: of those, items with a vector for the model: the ones the search ranked from.
            An item queued again after a change counts as ready (its previous vector is used).
        queued: items without a vector that are waiting, being embedded, or retrying.
        failed: items without a vector that were given up on (``visearch status`` says why).
        unqueued: items without a vector that nothing will embed: the model is inactive
            (``visearch model activate`` queues them).
    """

    kind: str
    total: int
    ready: int
    queued: int
    failed: int
    unqueued: int = 0

    @property
    def preparing(self) -> bool:
        """Embeddings are still being made for some items (they will become searchable)."""
        return self.queued > 0

    def note(self, model: str) -> str:
        singular, plural = _NOUN[self.kind]
        noun = singular if self.total == 1 else plural
        extra = ", ".join(
            part for part in (
                f"{self.queued} queued" if self.queued else "",
                f"{self.failed} failed, see `visearch status`" if self.failed else "",
                f"{self.unqueued} not embedded: the model is inactive" if self.unqueued else "",
            ) if part
        )
        if self.preparing:
            head = f"embeddings are still being prepared for model {model}"
        else:
            head = f"some {plural} have no vector for model {model}"
        return f"{head}: {self.ready} of {self.total} {noun} can be searched ({extra})"


def resolve_search_model(
    conn: psycopg.Connection,
    requested: str | None,
    settings: Settings,
    *,
    dataset_ids: Sequence[int] | None,
    needs_text: bool,
) -> ModelRow:
    """The model a search uses (see the module docs for the rule).

    Args:
        requested: ``SearchRequest.model``; wins when given.
        settings: ``Settings.model`` is used when no active model qualifies.
        dataset_ids: the searched datasets (``None``: every dataset with AI search enabled).
        needs_text: the query has free text, so only models that embed text qualify.

    Raises:
        NotFoundError: the requested model is not registered; or no model is active and
            ``Settings.model`` (the fallback) is not registered.
    """
    if requested:
        return get_model(conn, requested)
    row = serving_model(conn, dataset_ids=dataset_ids, needs_text=needs_text)
    if row is None:  # no (suitable) active model: the configured default, or its clear error
        return get_model(conn, settings.model)
    return row


def serving_model(
    conn: psycopg.Connection, *, dataset_ids: Sequence[int] | None, needs_text: bool
) -> ModelRow | None:
    """The serving model by the rule alone (``sql/status/serving_model.sql``); ``None`` when no
    active model qualifies."""
    row = conn.execute(
        read_sql("status/serving_model.sql"),
        {"dataset_ids": list(dataset_ids) if dataset_ids is not None else None, "needs_text": needs_text},
    ).fetchone()
    return ModelRow(*row[:5]) if row else None


def search_coverage(
    conn: psycopg.Connection, model: ModelRow, kind: str, dataset_ids: Sequence[int] | None
) -> Coverage | None:
    """The model's coverage of the searched datasets, or ``None`` when every item is searchable.

    Active models: read from the queue (one index probe when complete). Inactive models keep no
    queue, so their vectors are counted against the items (slower, but exact).
    """
    params = {
        "model_id": model.id,
        "kind": kind,
        "dataset_ids": list(dataset_ids) if dataset_ids is not None else None,
    }
    if not model.is_active:
        total, ready = conn.execute(read_sql("status/coverage_exact.sql"), params).fetchone()
        if ready == total:
            return None
        return Coverage(kind=kind, total=total, ready=ready, queued=0, failed=0, unqueued=total - ready)
    if not conn.execute(read_sql("status/coverage_gaps.sql"), params).fetchone()[0]:
        return None
    queued, failed, total = conn.execute(read_sql("status/coverage.sql"), params).fetchone()
    if queued == 0 and failed == 0:
        return None  # only changed items queued: all searchable with their previous vectors
    return Coverage(kind=kind, total=total, ready=max(0, total - queued - failed), queued=queued, failed=failed)


def join_notes(*notes: str | None) -> str | None:
    """Notes joined with '; ', or ``None`` when there are none."""
    kept = [n for n in notes if n]
    return "; ".join(kept) if kept else None
