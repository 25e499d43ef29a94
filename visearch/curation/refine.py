"""Search refinement around the search service: MMR diversity, average query expansion and
Rocchio relevance feedback (the algorithms: :mod:`visearch.curation.rerank`).

:func:`refined_search` runs :func:`visearch.search.search` as it is and only (1) re-queries by a
refined vector (``SearchRequest.vector``) and (2) re-orders a deeper ranking of the same
statement. With nothing to refine it is exactly :func:`visearch.search.search`; with
``diversity = 0`` the ranking is exactly today's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from visearch.config import Settings, get_settings
from visearch.curation import rerank
from visearch.db.database import Database
from visearch.errors import InvalidRequestError
from visearch.resources import read_sql

#: MMR re-ranks this many times the page's items, from the same ranking statement
MMR_DEPTH_FACTOR = 10
MAX_EXPAND = 100


@dataclass(frozen=True)
class Refinement:
    """How to refine a search.

    diversity: MMR trade-off in [0, 1] (0: plain ranking; see :func:`rerank.mmr`).
    expand: average query expansion with the top ``expand`` hits (0: none).
    positive_ids, negative_ids: relevance feedback, ids of items of the search's mode (image
        ids, or annotation ids for objects); Rocchio with :data:`rerank.ROCCHIO_ALPHA`,
        ``BETA``, ``GAMMA``.
    """

    diversity: float = 0.0
    expand: int = 0
    positive_ids: Sequence[int] = ()
    negative_ids: Sequence[int] = ()

    @property
    def active(self) -> bool:
        return bool(self.diversity or self.expand or self.positive_ids or self.negative_ids)

    def validate(self) -> None:
        if not 0.0 <= self.diversity <= 1.0:
            raise InvalidRequestError(f"diversity (MMR) is in [0, 1], not {self.diversity}")
        if not 0 <= self.expand <= MAX_EXPAND:
            raise InvalidRequestError(f"expand is in [0, {MAX_EXPAND}], not {self.expand}")
        both = set(self.positive_ids) & set(self.negative_ids)
        if both:
            raise InvalidRequestError(f"item(s) {sorted(both)} marked both positive and negative")


def _has_query(req) -> bool:
    return bool(req.query or req.image is not None or req.image_ids or req.annotation_id is not None
                or req.concepts)


def _by_vector(req, vector: np.ndarray):
    """``req`` re-aimed at ``vector``, keeping every filter (``#concepts`` of its text included)."""
    from visearch.search import parse_query

    concepts = tuple(dict.fromkeys([*(parse_query(req.query).concepts if req.query else ()), *req.concepts]))
    return dataclasses.replace(req, query=None, image=None, crop_xywh=None, image_ids=(), annotation_id=None,
                               concepts=concepts, vector=vector)


def stored_vectors(db: Database, model_name: str, kind: str, ids: Sequence[int]) -> np.ndarray:
    """(len(ids), dim) float32 stored vectors of items ``ids`` (image or annotation ids), in order.

    Raises:
        NotFoundError / NotEmbeddedError: an id that is unknown or has no vector for the model.
    """
    from visearch.errors import NotEmbeddedError

    if not ids:
        return np.zeros((0, 0), np.float32)
    with db.pooled() as conn:
        model_id = conn.execute("SELECT id FROM embedding_models WHERE name = %s", (model_name,)).fetchone()[0]
        rows = conn.execute(read_sql("curation/stored_vectors.sql"),
                            {"kind": kind, "model_id": model_id, "ids": list(ids)}).fetchall()
        conn.rollback()
    found = {i: np.asarray(v.to_numpy(), np.float32) for i, v in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotEmbeddedError(f"{kind}(s) {', '.join(map(str, missing))} are unknown or have no "
                               f"{model_name} vector (feedback ids are ids of the search's mode)")
    return np.stack([found[i] for i in ids])


def refined_search(db: Database, req, refinement: Refinement | None, settings: Settings | None = None):
    """:func:`visearch.search.search`, refined.

    Order of operations: (1) the query vector: the request's own, expanded with its top
    ``expand`` hits (Chum et al. 2007), then moved by the feedback (Rocchio 1971); (2) the
    ranking: with ``diversity > 0``, the best ``MMR_DEPTH_FACTOR * (limit + offset)`` (at most
    the service's MAX_LIMIT) of the same statement, re-ordered by MMR, then offset/limit.

    Returns:
        A :class:`~visearch.search.SearchResult` (``query_source`` is the original one; ``note``
        says what was refined).

    Raises:
        InvalidRequestError, NotFoundError, NotEmbeddedError: as the search; bad refinement.
    """
    from visearch.search import search
    from visearch.search.service import MAX_LIMIT

    settings = settings or get_settings()
    if refinement is None or not refinement.active:
        return search(db, req, settings)
    refinement.validate()
    kind = "object" if req.mode == "objects" else "image"
    notes = []
    vector = None
    source = None
    if refinement.expand or refinement.positive_ids or refinement.negative_ids:
        if _has_query(req):
            first = search(db, dataclasses.replace(req, limit=max(1, refinement.expand), offset=0), settings)
            vector, source, model = first.query_vector, first.query_source, first.model
            if refinement.expand:
                ids = [h.annotation_id if kind == "object" else h.image_id for h in first.hits[: refinement.expand]]
                vector = rerank.average_query_expansion(vector, stored_vectors(db, model, kind, ids))
                notes.append(f"query expanded with its top {len(ids)} hits")
        elif not refinement.positive_ids:
            raise InvalidRequestError("query expansion needs a query; feedback alone needs positive ids")
        else:
            source, model = "feedback", _model_of(db, req, settings)
        if refinement.positive_ids or refinement.negative_ids:
            pos = stored_vectors(db, model, kind, list(refinement.positive_ids))
            neg = stored_vectors(db, model, kind, list(refinement.negative_ids))
            try:
                vector = rerank.rocchio(vector, pos, neg)
            except ValueError as exc:
                raise InvalidRequestError(str(exc)) from exc
            notes.append(f"relevance feedback: {len(refinement.positive_ids)} positive, "
                         f"{len(refinement.negative_ids)} negative")
        req = dataclasses.replace(_by_vector(req, vector), model=model)
    if not refinement.diversity:
        result = search(db, req, settings)
    else:
        wanted = req.limit + req.offset
        deep = search(db, dataclasses.replace(req, limit=min(MAX_LIMIT, MMR_DEPTH_FACTOR * wanted), offset=0),
                      settings)
        ids = [h.annotation_id if kind == "object" else h.image_id for h in deep.hits]
        if ids:
            order = rerank.mmr(deep.query_vector, stored_vectors(db, deep.model, kind, ids), wanted,
                               refinement.diversity)
            deep.hits = [deep.hits[i] for i in order][req.offset:]
        notes.append(f"MMR diversity {refinement.diversity:g} over the best {len(ids)}")
        result = deep
    if source is not None:
        result.query_source = source
    result.note = "; ".join(n for n in [result.note, *notes] if n)
    return result


def _model_of(db: Database, req, settings: Settings) -> str:
    from visearch.curation.search_seam import filtered_candidates

    with db.pooled() as conn:
        model = filtered_candidates(conn, req, settings).model.name
        conn.rollback()
    return model
