"""Which model answers a search, and how much of the searched datasets it can see yet.

Part of the search layer: :func:`visearch.search.service.search` resolves both in its first
statement (``sql/search/context.sql``, which holds the rule), and the worker's ``model list``
asks :func:`serving_model` which one is serving.

**Serving model** (the model used when a request names none): among active models (and only
text-capable ones for a text query), the most recently activated one that *covers* the searched
datasets, i.e. has no stale item there (no queue row that is not failed: an ``EXISTS`` probe);
if none covers them, the one with the fewest stale items (counted only then). So after
``visearch model add NEW`` the workers embed everything with NEW in the background while
searches keep using the previous model; NEW serves a dataset from the moment its last item
there is embedded (or given up on). Both models' vectors stay queryable by name
(``SearchRequest.model``; ``visearch search --model NAME``). A model named by the request is
used as is. ``Settings.model`` (``VISEARCH_MODEL``) is only the fallback when no model is
active.

**Coverage** (:class:`Coverage`): while the searched datasets still have items queued for the
model, a search still answers, from the items that have a vector, and says so:
``SearchResult.coverage`` holds the counts and ``SearchResult.note`` a sentence such as
"embeddings are still being prepared for model efficientnet-lite0: 40 of 128 images can be
searched (88 queued)". The first statement only probes (``EXISTS``) for queued and for failed
items; the counts are taken only while something is queued, or when items failed *and* the
page came back short (a failed item alone must not make every later search count the dataset,
nor add its note to every full page; the same holds for a model that is not active, whose
vectors are counted against the items). When nothing is missing ``coverage`` is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import psycopg

from visearch.db.models import ModelRow
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


def serving_model(
    conn: psycopg.Connection, *, dataset_ids: Sequence[int] | None, needs_text: bool
) -> ModelRow | None:
    """The serving model by the rule alone (``sql/search/context.sql``) for the datasets with
    these ids (``None``: every enabled dataset); ``None`` when no active model qualifies."""
    names = None
    if dataset_ids is not None:
        names = [r[0] for r in conn.execute("SELECT name FROM datasets WHERE id = ANY(%s)", (list(dataset_ids),))]
    row = conn.execute(read_sql("search/context.sql"), context_params(
        model_name=None, fallback_model=None, needs_text=needs_text, kind="image",
        dataset_names=names, concept_terms=[], exclude_terms=[], cap=0, rows=1,
    )).fetchone()
    return ModelRow(*row[:5]) if row and row[0] is not None else None


def context_params(*, model_name, fallback_model, needs_text, kind, dataset_names, concept_terms,
                   exclude_terms, cap, rows, query_image_ids=None, query_annotation_id=None) -> dict:
    """The parameters of ``sql/search/context.sql`` (documented there)."""
    return {"model_name": model_name, "fallback_model": fallback_model, "needs_text": needs_text,
            "kind": kind, "dataset_names": list(dataset_names) if dataset_names is not None else None,
            "concept_terms": list(concept_terms), "exclude_terms": list(exclude_terms), "cap": cap,
            "rows": rows,            "query_image_ids": list(query_image_ids) if query_image_ids else None,
            "query_annotation_id": query_annotation_id}


def search_coverage(
    conn: psycopg.Connection, model: ModelRow, kind: str, dataset_ids: Sequence[int] | None, *,
    has_queued: bool, has_failed: bool, page_full: bool,
) -> Coverage | None:
    """The model's coverage of the searched datasets, or ``None`` when it is not worth a note.

    Args:
        dataset_ids: the searched datasets (``None``: every enabled one).
        has_queued, has_failed: the probes of ``sql/search/context.sql`` for this model and kind.
        page_full: the search returned as many hits as asked.

    Active models: counted from the queue, only while items are queued, or when items failed
    and the page is short (see the module docs). Inactive models keep no queue, so their vectors
    are counted against the items (slower, but exact): only when the page is short, like failed
    items (an inactive model is only searched when a request names it).
    """
    params = {
        "model_id": model.id,
        "kind": kind,
        "dataset_ids": list(dataset_ids) if dataset_ids is not None else None,
    }
    if not model.is_active:
        if page_full:
            return None
        total, ready = conn.execute(read_sql("status/coverage_exact.sql"), params).fetchone()
        if ready == total:
            return None
        return Coverage(kind=kind, total=total, ready=ready, queued=0, failed=0, unqueued=total - ready)
    if not (has_queued or (has_failed and not page_full)):
        return None
    queued, failed, total = conn.execute(read_sql("status/coverage.sql"), params).fetchone()
    if queued == 0 and failed == 0:
        return None  # only changed items queued: all searchable with their previous vectors
    return Coverage(kind=kind, total=total, ready=max(0, total - queued - failed), queued=queued, failed=failed)


def join_notes(*notes: str | None) -> str | None:
    """Notes joined with '; ', or ``None`` when there are none."""
    kept = [n for n in notes if n]
    return "; ".join(kept) if kept else None
