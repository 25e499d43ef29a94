"""The search service: one request in, ranked images or objects out.

A search travels: request -> query vector (:mod:`visearch.search.query_vector`) -> one SQL
statement that combines the filters with the vector ordering (``sql/search/rank_*.sql``) ->
typed hits. The CLI and the HTTP API both call :func:`search`.

Exact or approximate. Before ranking, the filtered candidates are counted (cheap: it uses the
ordinary indexes; counting stops at ``Settings.count_candidates_max``). With no filter, or with more candidates than
``Settings.exact_search_max_candidates``, the model's HNSW index serves the ordering, with
pgvector's iterative scans (``hnsw.iterative_scan = relaxed_order``) so that a filter does not
leave the result short. If it still comes back with fewer rows than min(limit, candidates),
the statement is run again exactly. A selective filter (few candidates) goes exact at once:
exact is then both cheaper and complete. So a search returns min(limit, matches) rows, never
fewer because of a filter; ``SearchResult.exact`` says which way it was answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Sequence

import psycopg

from visearch.config import Settings, get_settings
from visearch.db.database import Database
from visearch.db.models import ModelRow
from visearch.db.vectors import hnsw_index_exists
from visearch.errors import InvalidRequestError
from visearch.resources import read_sql
from visearch.search import filters
from visearch.search.query import parse_query
from visearch.search.query_vector import QueryVector, resolve_query_vector
from visearch.worker.serving import Coverage, join_notes, resolve_search_model, search_coverage

Mode = Literal["images", "objects"]
_KIND = {"images": "image", "objects": "object"}
MAX_LIMIT = 1000


@dataclass
class SearchRequest:
    """What to search for. Give exactly one query source: ``query`` text (with optional
    ``#concept`` terms), ``image`` bytes (optionally with ``crop_xywh``), ``image_ids`` or
    ``annotation_id``; or only ``#concept`` terms (ranked by likeness to the concept's mean).

    Scores are cosine similarities in [-1, 1]; ``min_score``/``max_score`` keep hits within.
    ``exact``: None picks the strategy (see module docs); True/False forces exact/HNSW.
    """

    mode: Mode = "images"
    query: str | None = None
    image: bytes | None = None
    crop_xywh: Sequence[float] | None = None  # COCO [x, y, width, height], pixels of `image`
    image_ids: Sequence[int] = ()
    annotation_id: int | None = None
    concepts: Sequence[str] = ()  # required, as tags or '#tags'
    exclude_concepts: Sequence[str] = ()
    datasets: Sequence[str] = ()  # names; empty = all datasets with AI search enabled
    metadata: dict = field(default_factory=dict)  # images.metadata must contain this (jsonb @>)
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int = 20
    offset: int = 0
    min_score: float | None = None
    max_score: float | None = None
    model: str | None = None  # default: the serving model (visearch.worker.serving)
    exact: bool | None = None
    #: a query vector given as is, (dim,) floats, renormalised (visearch.curation.refine)
    vector: Sequence[float] | None = None


@dataclass
class ImageHit:
    image_id: int
    score: float  # cosine similarity
    dataset: str
    file_name: str | None
    width: int
    height: int
    source_uri: str | None
    external_id: str | None


@dataclass
class ObjectHit:
    annotation_id: int
    score: float
    image_id: int
    dataset: str
    file_name: str | None
    bbox_xywh: tuple[float, float, float, float]  # COCO pixels
    concept: str | None
    iscrowd: bool


@dataclass
class SearchResult:
    mode: Mode
    model: str
    query_source: str  # text | image | image_ids | annotation | concepts
    hits: list  # ImageHit or ObjectHit, best first
    exact: bool  # True: exact scan; False: HNSW index (approximate)
    #: items passing the filters (before score range and limit), counted up to
    #: Settings.count_candidates_max: when candidates_capped, there are at least this many
    candidates: int
    note: str | None = None  # why fewer than `limit` hits came back, or that coverage is partial
    #: None: every item of the searched datasets has a vector for the model. Otherwise the
    #: search ranked only `coverage.ready` of `coverage.total` items (embeddings still being
    #: prepared, or failed), and `note` says so. See visearch.worker.serving.
    coverage: Coverage | None = None
    candidates_capped: bool = False


def _validate(req: SearchRequest) -> None:
    if req.mode not in _KIND:
        raise InvalidRequestError(f"mode must be 'images' or 'objects', not {req.mode!r}")
    if not 1 <= req.limit <= MAX_LIMIT:
        raise InvalidRequestError(f"limit must be between 1 and {MAX_LIMIT}, not {req.limit}")
    if req.offset < 0 or req.offset + req.limit > 10 * MAX_LIMIT:
        raise InvalidRequestError(f"offset must be in [0, {10 * MAX_LIMIT - req.limit}]")
    for name in ("min_score", "max_score"):
        value = getattr(req, name)
        if value is not None and not -1.0 <= value <= 1.0:
            raise InvalidRequestError(f"{name} is a cosine similarity in [-1, 1], not {value}")
    if req.min_score is not None and req.max_score is not None and req.min_score > req.max_score:
        raise InvalidRequestError(f"min_score {req.min_score} > max_score {req.max_score}")
    if req.crop_xywh is not None and req.image is None:
        raise InvalidRequestError("crop_xywh applies to an uploaded image; none was given")


def search(db: Database, req: SearchRequest, settings: Settings | None = None) -> SearchResult:
    """Run one search.

    Raises:
        InvalidRequestError: bad parameters, no or several query sources, a text query on an
            image-only model, an undecodable query image or bad crop box.
        NotEmbeddedError: the query image/annotation has no vector for the model yet.
        NotFoundError: unknown image/annotation id, dataset, concept or model.

    Model: ``req.model``, else the *serving model*: the most recently activated active model
    that has embedded all of the searched datasets (else the one with the fewest items left;
    ``Settings.model`` when no model is active). While the searched datasets still
    have items without a vector for the model, the search answers from those that have one and
    reports it in ``SearchResult.coverage`` and ``note`` (see :mod:`visearch.worker.serving`).
    """
    settings = settings or get_settings()
    _validate(req)
    text = parse_query(req.query).text if req.query else None
    kind = _KIND[req.mode]
    with db.pooled() as conn:
        dataset_ids = filters.resolve_dataset_ids(conn, req.datasets)
        model = resolve_search_model(conn, req.model, settings, dataset_ids=dataset_ids, needs_text=bool(text))
        coverage = search_coverage(conn, model, kind, dataset_ids)
        params = filters.request_params(conn, req, model.id, dataset_ids)
        candidates_sql = read_sql(f"search/{kind}_candidates.sql")
        qv = resolve_query_vector(
            conn, model, kind, req, text=text, params=params, candidates_sql=candidates_sql,
            settings=settings,
        )
        cap = max(settings.count_candidates_max, req.limit + req.offset + 1)
        candidates = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM ({candidates_sql}) AS c LIMIT %(count_cap)s) AS capped",
            {**params, "count_cap": cap},
        ).fetchone()[0]
        exact = _choose_exact(conn, req, kind, model, params, candidates, settings)
        wanted = min(req.limit + req.offset, candidates)
        rows = _rank(conn, kind, model, qv, params, req, exact=exact, settings=settings)
        if not exact and len(rows) < wanted:
            # the index under-filled (very selective filter or score bound): answer exactly
            rows = _rank(conn, kind, model, qv, params, req, exact=True, settings=settings)
            exact = True
        conn.rollback()
    ranked = len(rows)
    if req.min_score is not None:
        rows = [r for r in rows if r[1] >= req.min_score]
    rows = rows[req.offset :]
    hits = [_image_hit(r) if kind == "image" else _object_hit(r) for r in rows]
    result = SearchResult(
        mode=req.mode, model=model.name, query_source=qv.source, hits=hits, exact=exact,
        candidates=candidates, coverage=coverage, candidates_capped=candidates >= cap,
        note=join_notes(coverage.note(model.name) if coverage else None,
                        _shortfall_note(req, candidates, ranked, len(hits))),
    )
    # The unit query vector, for callers that compute more over the same query (the HTTP API's
    # score histogram). An attribute, not a field: asdict() and `search --json` stay small.
    result.query_vector = qv.vector
    return result


def _choose_exact(conn, req, kind, model: ModelRow, params, candidates, settings) -> bool:
    if req.exact is not None:
        return req.exact
    if not hnsw_index_exists(conn, kind, model.id):
        return True  # still loading: there is no index to use yet
    return filters.is_filtered(params) and candidates <= settings.exact_search_max_candidates


def rank_sql(kind: str, dim: int, *, exact: bool) -> str:
    """The ranking statement for ``kind`` ('image' | 'object'), exact or served by HNSW."""
    distance = (
        "(c.embedding <=> %(query)s::vector)"
        if exact
        else f"(c.embedding::vector({dim:d}) <=> %(query)s::vector({dim:d}))"
    )
    return read_sql(f"search/rank_{kind}s.sql").format(
        candidates=read_sql(f"search/{kind}_candidates.sql"), distance=distance
    )


def _rank(conn: psycopg.Connection, kind, model: ModelRow, qv: QueryVector, params, req, *, exact, settings):
    sql = rank_sql(kind, model.dim, exact=exact)
    limit = req.limit + req.offset
    min_distance = 1 - req.max_score if req.max_score is not None else None
    with conn.transaction():
        if not exact:  # transaction-local pgvector settings, in one round trip
            conn.execute(
                "SELECT set_config('hnsw.ef_search', %s, true),"
                " set_config('hnsw.iterative_scan', 'relaxed_order', true),"
                " set_config('hnsw.max_scan_tuples', %s, true)",
                (str(min(1000, max(settings.hnsw_ef_search, limit))), str(settings.hnsw_max_scan_tuples)),
            )
        rows = conn.execute(
            sql,
            {**params, "query": qv.vector, "limit": limit, "min_distance": min_distance},
        ).fetchall()
    return rows


def _shortfall_note(req: SearchRequest, candidates: int, ranked: int, returned: int) -> str | None:
    if returned >= req.limit:
        return None
    if candidates < req.limit + req.offset:
        return f"the filters match {candidates} items"
    if req.min_score is not None and returned < ranked - req.offset:
        return f"min_score {req.min_score} cut {ranked - req.offset - returned} of the best matches"
    if req.max_score is not None:
        return f"max_score {req.max_score} left fewer items"
    return None


def _image_hit(r) -> ImageHit:
    image_id, score, _dataset_id, dataset, file_name, width, height, uri, external_id = r
    return ImageHit(image_id, float(score), dataset, file_name, width, height, uri, external_id)


def _object_hit(r) -> ObjectHit:
    ann_id, score, image_id, _ds_id, dataset, file_name, x, y, w, h, concept, iscrowd, _src, _s = r
    return ObjectHit(ann_id, float(score), image_id, dataset, file_name, (x, y, w, h), concept, iscrowd)
