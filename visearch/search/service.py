"""The search service: one request in, ranked images or objects out.

A search travels: request -> one call that resolves names, the model and what it may use
(``search_context()``, ``sql/schema/0015_search_context.sql``) -> the query vector
(:mod:`visearch.search.query_vector`: text or an upload runs the model, several stored images
are averaged, a concept centroid is one more statement; one stored image or box needs nothing:
the ranking statement reads its vector) -> one ranking statement that applies the filters and
orders by cosine distance (``rank_images`` / ``rank_objects`` in ``sql/search/statements.sql``,
composed by :mod:`visearch.search.statements`) -> typed hits. So a search is at most three
round trips to PostgreSQL, and a search by one stored item that repeats an earlier request's
kind (same model, datasets, concepts, limit) one: its ranking statement is sent with the
context statement (see :func:`search`). The CLI and the HTTP API both call :func:`search`.
Further down: which model serves a search and how much of the datasets it covers
(:func:`serving_model`, :class:`Coverage`), the score histogram over a search's candidates
(:func:`score_histogram`), and query strings (:func:`parse_query`).

Exact or approximate, decided from cheap information, never by counting the candidates:

* a selective concept or dataset filter (its own index says it holds at most
  ``Context.exact_cap`` items, about 4 * sqrt(rows * N) for a model of N vectors and
  never more than ``Settings.exact_search_max_candidates``; counting stops there) drives the
  statement from that index and ranks its rows exactly: cheaper than the index and complete
  (the rule and its measurements: ``search_context()``, ``sql/schema/0015_search_context.sql``);
* otherwise (no filter, or a broad one) the model's HNSW index orders the rows, with pgvector's
  iterative scan (``hnsw.iterative_scan = relaxed_order``) so that the filters, checked per
  row, do not leave the page short. If it still returns fewer rows than asked (a very
  selective filter the estimate could not see, or a score bound), the same statement runs again
  exactly (the under-fill fallback). The same happens when a search by one stored item,
  unfiltered, does not find that item itself (its own vector is at distance 0): the graph
  search got stuck in the wrong region (an HNSW tail failure), so its other answers are suspect;
* no HNSW index yet (still loading): exact.

So a search returns min(limit, matches) rows, never fewer because of the index;
``SearchResult.exact`` says which way it was answered and ``SearchResult.plan`` which shape.
"""

from __future__ import annotations

import math
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Sequence

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from visearch.config import Settings, get_settings
from visearch.db.database import Database
from visearch.db.models import ModelRow
from visearch.db.prepared import Prepared, prepared, run
from visearch.errors import InvalidRequestError, NotFoundError
from visearch.resources import read_sql
from visearch.search import filters
from visearch.search.query_vector import resolve_query_vector
from visearch.search.statements import (MIN_CENTROID_BOX_AREA, QUERY_PARAMS, Shape, hnsw_settings, prepared_rank,
                                        render)

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
    model: str | None = None  # default: the serving model (section "The serving model" below)
    exact: bool | None = None
    #: a query vector given as is, (dim,) floats, renormalised (visearch.curation.refine)
    vector: Sequence[float] | None = None
    #: with image_ids / annotation_id: leave the query's own items out of the results
    exclude_query_items: bool = False


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
    exact: bool  # True: exact ranking; False: HNSW index (approximate)
    #: items passing the filters, when the search knows it: the ranking came back with fewer
    #: than limit + offset rows (then it ranked all of them). Otherwise nothing was counted and
    #: ``candidates_capped`` is true: there are at least this many.
    candidates: int
    note: str | None = None  # why fewer than `limit` hits came back, or that coverage is partial
    #: None: every item of the searched datasets has a vector for the model (or only failed
    #: items lack one and the page is full). Otherwise the search ranked only `coverage.ready`
    #: of `coverage.total` items, and `note` says so. See :class:`Coverage`.
    coverage: Coverage | None = None
    candidates_capped: bool = False
    #: the statement's shape: hnsw | scan | by_concept | by_dataset (visearch.search.statements)
    plan: str = ""
    #: the ranking statement as run, runnable in psql (only with ``search(..., show_sql=True)``)
    sql: str | None = None

    @property
    def query_vector(self) -> np.ndarray:
        """The unit query vector, (dim,) float32. For a search by one stored item the ranking
        statement read it itself; it is read here on first use, with the same expression, so
        that scores computed with it equal the ranking's."""
        db, vector = self._query
        if vector is None:
            with db.pooled() as conn:
                value = conn.execute(self.shape.query_vector(), self.shape.params).fetchone()[0]
                conn.rollback()
            vector = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=np.float32)
            self._query = (db, vector)
        return vector


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


@dataclass
class Context:
    """What ``search_context()`` resolved for one request."""

    model: ModelRow
    dataset_ids: list[int] | None  # named datasets, else None (every enabled one)
    searched_ids: list[int]  # the datasets searched
    all_enabled: bool  # no dataset has AI search disabled
    concept_ids: list[int]
    exclude_concept_ids: list[int]
    has_queued: bool
    has_failed: bool
    has_index: bool
    #: the most items a filter may hold to drive an exact ranking (``search_context()``)
    exact_cap: int
    concept_size: int | None  # items of the smallest required concept, counted up to exact_cap + 1
    dataset_size: int | None  # items of the named datasets, counted up to exact_cap + 1
    #: the stored vectors of the query's image ids / box, when all have one and the client
    #: averages them (several images; on Citus, one too)
    stored_vectors: list | None = None
    #: a search by one stored image or box that has a vector: the ranking statement reads it
    #: itself (``Shape.query_from``); None otherwise
    query_from: str | None = None
    #: vectors in the model's HNSW index (``pg_class.reltuples``; None: no index or not counted
    #: yet): what an HNSW ranking's ef_search rises with (:func:`hnsw_ef_search`)
    hnsw_index_size: float | None = None


@contextmanager
def _autocommit(conn: psycopg.Connection):
    """Run reads without psycopg's implicit BEGIN (a round trip of its own); restore after."""
    conn.autocommit = True
    try:
        yield conn
    finally:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()  # a ranking transaction that failed half-way
        conn.autocommit = False


def resolve_context(conn: psycopg.Connection, req: SearchRequest, settings: Settings, *,
                    kind: str, needs_text: bool) -> Context:
    """Run ``search_context()`` for ``req``; raise the request's errors.

    Raises:
        NotFoundError: unknown model (naming the known ones), dataset or concept.
        InvalidRequestError: a named dataset has AI search disabled.
    """
    params = _context_params(req, settings, kind=kind, needs_text=needs_text)
    (row,), = run(conn, [(_CONTEXT, params)])
    return _context(conn, req, settings, params, row)


#: The context: ``search_context()`` (sql/schema/0015_search_context.sql, which documents its
#: arguments and columns) called with :func:`context_params`.
CONTEXT_CALL = (
    "SELECT * FROM search_context(%(model_name)s::text, %(fallback_model)s::text, %(needs_text)s::boolean,"
    " %(kind)s::text, %(dataset_names)s::text[], %(concept_terms)s::text[], %(exclude_terms)s::text[],"
    " %(cap)s::integer, %(rows)s::integer, %(query_image_ids)s::bigint[], %(query_annotation_id)s::bigint)"
)


#: :data:`CONTEXT_CALL` as run prepared (:func:`visearch.db.prepared.run`): planned once per
#: connection, as are the function's own statements (PL/pgSQL keeps their plans for the session).
_CONTEXT = prepared(CONTEXT_CALL)


def _context_params(req: SearchRequest, settings: Settings, *, kind: str, needs_text: bool,
                    parsed: "ParsedQuery | None" = None) -> dict:
    """The context statement's parameters for ``req`` (``parsed``: its query, if parsed already)."""
    if parsed is None and req.query:
        parsed = parse_query(req.query)
    # terms as typed; the database's concept_tag() turns them into tags (search_context())
    required = [*(parsed.concepts if parsed else ()), *(t.lstrip("#") for t in req.concepts)]
    excluded = [t.lstrip("#") for t in req.exclude_concepts]
    return context_params(
        model_name=req.model or None, fallback_model=settings.model, needs_text=needs_text, kind=kind,
        dataset_names=list(req.datasets) if req.datasets else None, concept_terms=required,
        exclude_terms=excluded, cap=settings.exact_search_max_candidates, rows=req.limit + req.offset,
        query_image_ids=list(dict.fromkeys(req.image_ids)) or None, query_annotation_id=req.annotation_id,
    )


def _context(conn: psycopg.Connection, req: SearchRequest, settings: Settings, params: dict, row) -> Context:
    """The :class:`Context` from the context statement's row (run with ``params``); raises the
    request's errors."""
    (model_id, name, dim, embeds_text, is_active, dataset_ids, disabled, all_enabled, searched_ids,
     concept_ids, concepts_found, exclude_ids, excludes_found, has_queued, has_failed, has_index,
     exact_cap, concept_size, dataset_size, on_citus, query_images_found, query_image_vectors, query_box_found,
     query_box_vector, hnsw_index_size) = row
    if model_id is None and req.model:
        canonical = _canonical_model_name(req.model)
        if canonical != req.model:  # another spelling of a stored model ("openclip")
            return resolve_context(conn, _replace(req, model=canonical), settings, kind=params["kind"],
                                   needs_text=params["needs_text"])
        known = [r[0] for r in conn.execute("SELECT name FROM embedding_models ORDER BY id")]
        raise NotFoundError(f"unknown model {req.model!r}; known models: {', '.join(known) or 'none'}")
    if model_id is None:
        known = [r[0] for r in conn.execute("SELECT name FROM embedding_models ORDER BY id")]
        raise NotFoundError(
            f"no vectors for model {settings.model!r} yet: run `visearch embed --model {settings.model}`"
            + (f" (models with vectors: {', '.join(known)})" if known else ""))
    if dataset_ids is not None and (None in dataset_ids or disabled):
        filters.resolve_dataset_ids(conn, req.datasets)  # raises with the names and the hint
    if not concepts_found:
        filters.resolve_concept_ids(conn, params["concept_terms"])  # raises, suggesting close tags
    if not excludes_found:
        filters.resolve_concept_ids(conn, params["exclude_terms"])
    ids = set(req.image_ids)
    query_from, stored = None, None
    if on_citus:  # the vectors came back (Citus refuses the ranking's subquery form)
        if ids and query_image_vectors and len(query_image_vectors) == len(ids):
            stored = query_image_vectors
        elif req.annotation_id is not None and not ids and query_box_vector is not None:
            stored = [query_box_vector]
    elif len(ids) == 1 and query_images_found == 1:
        query_from = "stored_image"
    elif req.annotation_id is not None and not ids and query_box_found:
        query_from = "stored_box"
    elif len(ids) > 1 and query_image_vectors and len(query_image_vectors) == len(ids):
        stored = query_image_vectors
    return Context(
        model=ModelRow(model_id, name, dim, embeds_text, is_active), dataset_ids=dataset_ids,
        searched_ids=searched_ids or [], all_enabled=all_enabled, concept_ids=concept_ids or [],
        exclude_concept_ids=exclude_ids or [], has_queued=has_queued, has_failed=has_failed,
        has_index=has_index, exact_cap=exact_cap, concept_size=concept_size, dataset_size=dataset_size,
        stored_vectors=stored, query_from=query_from, hnsw_index_size=hnsw_index_size,
    )


def _canonical_model_name(name: str) -> str:
    if not name.startswith("openclip"):
        return name  # only openclip has other spellings; no need to import the model registry
    from visearch.embedding.registry import canonical_name

    try:
        return canonical_name(name)
    except ValueError:
        return name


def _replace(req: SearchRequest, **changes) -> SearchRequest:
    import dataclasses

    return dataclasses.replace(req, **changes)


def plan_search(ctx: Context, req: SearchRequest, kind: str, settings: Settings) -> Shape:
    """The statement shape for ``req`` (see the module docs) and its bound parameters."""
    drivers = []
    if ctx.concept_size is not None:
        drivers.append((ctx.concept_size, "by_concept"))
    if ctx.dataset_size is not None:
        drivers.append((ctx.dataset_size, "by_dataset"))
    smallest = min(drivers) if drivers else None
    if req.exact is False:
        driver = "hnsw"
    elif req.exact is True or not ctx.has_index:
        driver = smallest[1] if smallest else "scan"
    elif smallest and smallest[0] <= ctx.exact_cap:
        driver = smallest[1]
    else:
        driver = "hnsw"
    dataset_ids = ctx.dataset_ids if ctx.dataset_ids is not None else (None if ctx.all_enabled else ctx.searched_ids)
    params = {
        "model_id": ctx.model.id,
        "dataset_ids": dataset_ids,
        "concept_ids": ctx.concept_ids,
        "exclude_concept_ids": ctx.exclude_concept_ids,
        "metadata": Jsonb(req.metadata) if req.metadata else None,
        "created_from": req.created_from,
        "created_to": req.created_to,
        "min_distance": 1 - req.max_score if req.max_score is not None else None,
        "query_image_ids": list(dict.fromkeys(req.image_ids)) or None,
        "query_annotation_id": req.annotation_id,
        "min_box_area": MIN_CENTROID_BOX_AREA if kind == "object" else None,
    }
    shape = Shape(kind, driver, ctx.model.dim, params, exclude_query_items=req.exclude_query_items,
                  query_from=ctx.query_from or "param")
    if driver == "hnsw":  # (an exact ranking has none)
        shape.ef_search = hnsw_ef_search(settings, req.limit + req.offset, ctx.hnsw_index_size,
                                         filtered=shape.filtered)
    return shape


def search(db: Database, req: SearchRequest, settings: Settings | None = None, *,
           show_sql: bool = False) -> SearchResult:
    """Run one search.

    Args:
        show_sql: also return the ranking statement as run (``SearchResult.sql``), with its
            parameters written in, runnable as-is in psql.

    Raises:
        InvalidRequestError: bad parameters, no or several query sources, a text query on an
            image-only model, an undecodable query image or bad crop box, a named dataset with
            AI search disabled.
        NotEmbeddedError: the query image/annotation has no vector for the model yet; no item
            carries the #concepts (together) to average.
        NotFoundError: unknown image/annotation id, dataset, concept or model.

    Model: ``req.model``, else the serving model (:func:`serving_model`). While the
    searched datasets still have items without a vector for the model, the search answers from
    those that have one and reports it in ``SearchResult.coverage`` and ``note``.

    Round trips: a search by one stored image or box whose kind of request (model, datasets,
    concepts, limit: everything but the item) was resolved before on this process sends the
    ranking statement it expects in the same round trip as the context statement (a guess from
    the last context of that kind, :class:`_Recent`); when the fresh context plans the same
    statement, its rows are the answer (one round trip), else the right statement runs after
    it (two, as a first search does).
    """
    settings = settings or get_settings()
    _validate(req)
    parsed = parse_query(req.query) if req.query else None
    text = parsed.text if parsed else None
    kind = _KIND[req.mode]
    wanted = req.limit + req.offset
    params = _context_params(req, settings, kind=kind, needs_text=bool(text), parsed=parsed)
    key = (db.url, *(tuple(v) if isinstance(v, list) else v for k, v in sorted(params.items())
                     if k not in ("query_image_ids", "query_annotation_id")))
    with db.pooled() as conn, _autocommit(conn):
        guess = _guess(_RECENT.get(key), req, text, kind, settings)
        guessed = None
        if guess is None:
            (row,), = run(conn, [(_CONTEXT, params)])
        else:
            try:  # (never on Citus: no query_from there, no guess)
                sent, config = ranking(guess, wanted, settings, exact=guess.exact)
                (row,), guessed = run(conn, [(_CONTEXT, params), (sent, guess.params)], settings=config)
            except psycopg.Error:  # the guess failed (a model dropped since?): without it
                guess = None
                (row,), = run(conn, [(_CONTEXT, params)])
        ctx = _context(conn, req, settings, params, row)
        _RECENT.put(key, ctx)
        shape = plan_search(ctx, req, kind, settings)
        qv = resolve_query_vector(conn, ctx.model, kind, req, text=text, shape=shape, settings=settings,
                                  stored=ctx.stored_vectors, in_statement=ctx.query_from is not None)
        if qv.vector is not None:
            shape.params["query"] = qv.vector
        exact = shape.exact
        if guessed is not None and _same_statement(guess, (sent, config), shape, wanted, settings):
            rows = guessed
        else:
            rows = _rank(conn, shape, wanted, settings, exact=exact)
        if not exact and (len(rows) < wanted or _lost_itself(shape, req, rows)):
            # the index under-filled (very selective filter or score bound), or missed the query
            # item itself (an HNSW tail failure: the rest of the answer is suspect too): exact
            exact = True
            rows = _rank(conn, shape, wanted, settings, exact=True)
        coverage = search_coverage(
            conn, ctx.model, kind, ctx.dataset_ids, has_queued=ctx.has_queued,
            has_failed=ctx.has_failed, page_full=len(rows) >= wanted,
        )
        sql_text = None
        if show_sql:  # (with the settings it ran with)
            sql_text = render(conn, shape.rank(exact=exact), {**shape.params, "limit": wanted},
                              ranking(shape, wanted, settings, exact=exact)[1])
    ranked = len(rows)
    short = ranked < wanted
    if req.min_score is not None:
        rows = [r for r in rows if r[1] >= req.min_score]
    rows = rows[req.offset :]
    hits = [_image_hit(r) if kind == "image" else _object_hit(r) for r in rows]
    result = SearchResult(
        mode=req.mode, model=ctx.model.name, query_source=qv.source, hits=hits, exact=exact,
        candidates=ranked, candidates_capped=not short or req.max_score is not None,
        coverage=coverage, plan=shape.driver if exact == shape.exact else "scan", sql=sql_text,
        note=join_notes(coverage.note(ctx.model.name) if coverage else None,
                        _shortfall_note(req, ranked, short, len(hits))),
    )
    # The resolved shape and the unit query vector (read on first use when the statement read it
    # itself), for callers that compute more over the same query (the HTTP API's score
    # histogram, curation's refinements). Attributes, not fields: asdict() stays small.
    result.shape = shape
    result._query = (db, qv.vector)
    return result


class _Recent:
    """The last :class:`Context` per kind of search request (bounded, thread-safe): what
    :func:`search` guesses its ranking statement from. A guess is checked against the fresh
    context before its rows are used, so a stale entry costs one wasted statement, never a
    wrong answer."""

    def __init__(self, size: int = 256) -> None:
        self._size, self._items, self._lock = size, {}, threading.Lock()

    def get(self, key: tuple) -> Context | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: tuple, ctx: Context) -> None:
        with self._lock:
            self._items.pop(key, None)
            if len(self._items) >= self._size:
                self._items.pop(next(iter(self._items)))
            self._items[key] = ctx


_RECENT = _Recent()


def _guess(ctx: Context | None, req: SearchRequest, text: str | None, kind: str, settings: Settings) -> Shape | None:
    """The ranking statement a search by one stored item would run if the database still said
    ``ctx`` (its last context of this kind); None when there is nothing to guess from or the
    query vector needs the client (text, an upload, several images averaged, a given vector)."""
    if ctx is None or ctx.query_from is None or text or req.image is not None or req.vector is not None:
        return None
    one_image = len(set(req.image_ids)) == 1 and req.annotation_id is None
    one_box = req.annotation_id is not None and not req.image_ids
    if not (one_image or one_box) or ctx.query_from != ("stored_image" if one_image else "stored_box"):
        return None
    return plan_search(ctx, req, kind, settings)


def _same_statement(a: Shape, sent: tuple[Prepared, list[tuple[str, str]]], b: Shape, limit: int,
                    settings: Settings) -> bool:
    """Whether shape ``b`` runs the ranking that ran for ``a`` (``sent``: :func:`ranking` of
    ``a``, as run): the same prepared text (:func:`~visearch.search.statements.prepared_rank`,
    which knows what the text depends on), the same pgvector settings and the same bound query
    (the item, never a client-side vector)."""
    return ("query" not in b.params and sent == ranking(b, limit, settings, exact=b.exact)
            and all(a.params.get(k) == b.params.get(k) for k in QUERY_PARAMS))


def _lost_itself(shape: Shape, req: SearchRequest, rows: list) -> bool:
    """A search by one stored item with nothing that could filter that item out, whose HNSW
    answer does not contain the item (its own vector, at distance 0, must come first): the graph
    search got stuck far from the query, and its other answers are no better."""
    if shape.filtered or req.exclude_query_items or req.offset:
        return False
    if len(set(req.image_ids)) == 1 and shape.kind == "image":
        return req.image_ids[0] not in {r[0] for r in rows}
    if req.annotation_id is not None and shape.kind == "object":
        return req.annotation_id not in {r[0] for r in rows}
    return False


#: Index size up to which ``Settings.hnsw_ef_search`` alone holds recall@10 (``hnsw_ef_search``).
EF_BASE_SIZE = 100_000


def hnsw_ef_search(settings: Settings, limit: int, index_size: float | None = None, *,
                   filtered: bool = False) -> int:
    """pgvector's ``hnsw.ef_search`` for an HNSW ranking of ``limit`` rows (limit + offset) on an
    index of ``index_size`` vectors (``pg_class.reltuples``; None: unknown), ``filtered``: with
    filters checked per row (an iterative scan). The one place this rule lives.

    Rule: ``Settings.hnsw_ef_search`` (the floor an operator sets, default 100) up to
    ``EF_BASE_SIZE`` vectors; above, it doubles for every tenfold growth of the index, and
    octuples when filtered: ``floor * 2 ** (g * log10(N / EF_BASE_SIZE))`` with g = 1, or 3
    filtered; never below ``limit``, never above 1000 (pgvector's maximum). So at 1M vectors,
    200 unfiltered and 800 filtered.

    Measured (``python bench/bench_search.py``, stored-image queries, recall@10 against brute
    force; README, Benchmarks): at 100k x 1280-d (200 queries), ef_search 100 gives recall 1.000,
    unfiltered and at a 10% concept filter. At 1M x 512-d (100 Gaussian clusters; m 24 /
    ef_construction 128, ``hnsw_build_params``; 100 queries, ``--ef-search 100,200,400,800``),
    unfiltered: 0.967 / 0.988 / 0.992 / 0.993 at ef_search 100 / 200 / 400 / 800; with a 10%
    concept filter: 0.906 / 0.939 / 0.974 / 0.991. The larger graph needs
    a wider beam for the same recall (Malkov & Yashunin 2018, arXiv:1603.09320, sec. 4), and
    an iterative scan with a filter more so: of each beam of ef candidates only the share that
    passes the filter counts, and what it reads beyond the first beam is visited in relaxed
    order (pgvector 0.8, ``hnsw.iterative_scan``).
    """
    ef = settings.hnsw_ef_search
    if index_size is not None and index_size > EF_BASE_SIZE:
        ef = math.ceil(ef * 2 ** ((3 if filtered else 1) * math.log10(index_size / EF_BASE_SIZE)) - 1e-9)
    return min(1000, max(ef, limit))


def ranking(shape: Shape, limit: int, settings: Settings, *,
            exact: bool) -> tuple[Prepared, list[tuple[str, str]]]:
    """What runs for ``shape``'s ranking of ``limit`` rows (:func:`visearch.db.prepared.run`):
    the prepared statement (:func:`~visearch.search.statements.prepared_rank`) and pgvector's
    transaction-local settings (none for an exact ranking)."""
    config = [] if exact else hnsw_settings(shape.ef_search, settings.hnsw_max_scan_tuples)
    return prepared_rank(shape, exact=exact, limit=limit), config


def _rank(conn: psycopg.Connection, shape: Shape, limit: int, settings: Settings, *, exact: bool) -> list:
    """Run the ranking statement (``limit`` rows), pgvector's settings before it: one round trip.

    It runs prepared (:func:`visearch.db.prepared.run`), everything but the query written in
    (:func:`visearch.search.statements.prepared_rank`, its text cached per kind of search): with
    a generic plan on one node, planned once per connection, never per search (at a 0.1%
    filter, 100k x 1280-d: 0.94 ms instead of 1.40 a ranking, measured); planned per call on
    Citus, which cannot distribute a generic plan.
    """
    statement, config = ranking(shape, limit, settings, exact=exact)
    rows, = run(conn, [(statement, shape.params)], settings=config)
    return rows


def _shortfall_note(req: SearchRequest, ranked: int, short: bool, returned: int) -> str | None:
    if returned >= req.limit:
        return None
    if short and req.max_score is None:
        return f"the filters match {ranked} items"
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


# ---- The serving model and coverage -----------------------------------------------------------
# Which model answers a search, and how much of the searched datasets it can see yet.
# :func:`search` resolves both in its first statement (``search_context()``,
# sql/schema/0015_search_context.sql, which holds the rule); ``visearch model list``
# (:mod:`visearch.admin`) asks :func:`serving_model` which one is serving.
#
# **Serving model** (the model used when a request names none): among active models (and only
# text-capable ones for a text query), the most recently activated one that *covers* the searched
# datasets, i.e. has no stale item there (no queue row that is not failed: an ``EXISTS`` probe);
# if none covers them, the one with the fewest stale items (counted only then). So after
# ``visearch model add NEW`` the workers embed everything with NEW in the background while
# searches keep using the previous model; NEW serves a dataset from the moment its last item
# there is embedded (or given up on). Both models' vectors stay queryable by name
# (``SearchRequest.model``; ``visearch search --model NAME``). A model named by the request is
# used as is. ``Settings.model`` (``VISEARCH_MODEL``) is only the fallback when no model is
# active.
#
# **Coverage** (:class:`Coverage`): while the searched datasets still have items queued for the
# model, a search still answers, from the items that have a vector, and says so:
# ``SearchResult.coverage`` holds the counts and ``SearchResult.note`` a sentence such as
# "embeddings are still being prepared for model efficientnet-lite0: 40 of 128 images can be
# searched (88 queued)". The first statement only probes (``EXISTS``) for queued and for failed
# items; the counts are taken only while something is queued, or when items failed *and* the
# page came back short (a failed item alone must not make every later search count the dataset,
# nor add its note to every full page; the same holds for a model that is not active, whose
# vectors are counted against the items). When nothing is missing ``coverage`` is ``None``.

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
    """The serving model by the rule alone (``search_context()``) for the datasets with
    these ids (``None``: every enabled dataset); ``None`` when no active model qualifies."""
    names = None
    if dataset_ids is not None:
        names = [r[0] for r in conn.execute("SELECT name FROM datasets WHERE id = ANY(%s)", (list(dataset_ids),))]
    row = conn.execute(CONTEXT_CALL, context_params(
        model_name=None, fallback_model=None, needs_text=needs_text, kind="image",
        dataset_names=names, concept_terms=[], exclude_terms=[], cap=0, rows=1,
    )).fetchone()
    return ModelRow(*row[:5]) if row and row[0] is not None else None


def context_params(*, model_name, fallback_model, needs_text, kind, dataset_names, concept_terms,
                   exclude_terms, cap, rows, query_image_ids=None, query_annotation_id=None) -> dict:
    """The arguments of ``search_context()`` (:data:`CONTEXT_CALL`; documented in
    ``sql/schema/0015_search_context.sql``)."""
    return {"model_name": model_name, "fallback_model": fallback_model, "needs_text": needs_text,
            "kind": kind, "dataset_names": list(dataset_names) if dataset_names is not None else None,
            "concept_terms": list(concept_terms), "exclude_terms": list(exclude_terms), "cap": cap,
            "rows": rows, "query_image_ids": list(query_image_ids) if query_image_ids else None,
            "query_annotation_id": query_annotation_id}


def search_coverage(
    conn: psycopg.Connection, model: ModelRow, kind: str, dataset_ids: Sequence[int] | None, *,
    has_queued: bool, has_failed: bool, page_full: bool,
) -> Coverage | None:
    """The model's coverage of the searched datasets, or ``None`` when it is not worth a note.

    Args:
        dataset_ids: the searched datasets (``None``: every enabled one).
        has_queued, has_failed: the probes of ``search_context()`` for this model and kind.
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


# ---- The score histogram ---------------------------------------------------------------------
# The score distribution of a search over its candidates (``score_histogram`` in
# ``sql/search/statements.sql``, composed by :meth:`Shape.histogram`).
#
# What a UI needs to pick a score range: how many of the items that pass the filters fall in each
# band of cosine similarity to the query. Computed in the database, in one statement, with
# ``width_bucket`` over the same candidate set the search ranked (its resolved filters and query
# vector are reused, nothing is resolved again):
#
# * bins are equal-width over the **observed** score range ``[lo, hi]`` of the candidates (not
#   the theoretical [-1, 1]: real models use a narrow part of it, e.g. efficientnet-lite0 scores
#   are all >= 0), so ``bins`` bins always resolve the spread that is there; ``edges`` gives the
#   ``bins + 1`` boundaries, bin ``k`` is ``[edges[k], edges[k+1])`` and the last one is closed;
# * the query's own stored items (``image_ids``, ``annotation_id``) are left out: each would
#   score 1.0 and stretch the range;
# * the score range (``min_score``/``max_score``) and the limit are not applied: the histogram
#   shows the whole candidate set, so a client can see where a threshold would cut;
# * ``sum(counts) == considered``. When the search ran on the HNSW index (no filter, or a broad
#   one) and the model has more than ``max_considered`` vectors (PostgreSQL's own estimate, no
#   counting), the vector table is read with ``TABLESAMPLE BERNOULLI`` at about that many rows
#   (``sampled`` is then true); a selective filter's candidates are all scored.

#: Default number of bins, and the largest accepted.
DEFAULT_BINS = 20
MAX_BINS = 200
#: Candidate sets above this many are sampled down to about this many.
DEFAULT_MAX_CONSIDERED = 100_000


@dataclass
class ScoreHistogram:
    """Counts of candidates per score bin. Scores are cosine similarities in [-1, 1]."""

    bins: int
    lo: float | None  # lowest score considered (None: no candidates)
    hi: float | None  # highest score considered
    edges: list[float]  # bins + 1 boundaries, lo .. hi (empty when there were no candidates)
    counts: list[int]  # bins counts, summing to `considered`
    considered: int  # candidates scored: all of them unless `sampled`
    sampled: bool  # True: a random sample of the candidates was scored
    query_items: int = 0  # the query's own stored items among the candidates (not in counts)


def histogram_edges(lo: float, hi: float, bins: int) -> list[float]:
    """``bins + 1`` equal-width boundaries from ``lo`` to ``hi`` (exactly ``hi`` at the end)."""
    width = (hi - lo) / bins
    return [lo + k * width for k in range(bins)] + [hi]


def score_histogram(
    db: Database,
    result: SearchResult,
    *,
    bins: int = DEFAULT_BINS,
    max_considered: int = DEFAULT_MAX_CONSIDERED,
) -> ScoreHistogram:
    """The score distribution of a search's candidates.

    Args:
        db: the database.
        result: the search's result (its ``shape`` and ``query_vector`` attributes: the
            resolved filters and the unit query vector).
        bins: number of equal-width bins, 1..MAX_BINS.
        max_considered: read about this many vectors at most (TABLESAMPLE beyond), for
            searches answered on the HNSW index.

    Raises:
        ValueError: ``bins`` out of range.
    """
    if not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be in [1, {MAX_BINS}], not {bins}")
    shape = result.shape
    params = {**shape.params, "bins": bins}  # the query: a parameter there, or read by the statement
    with db.pooled() as conn:
        sample = False
        if shape.driver == "hnsw":  # a broad search: how big is the vector table? (an estimate)
            table = "image_embeddings" if shape.kind == "image" else "object_embeddings"
            rows = conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()[0]
            if rows > max_considered:
                sample = True
                params["sample_percent"] = 100.0 * max_considered / rows
        lo, hi, considered, counts, query_items = conn.execute(shape.histogram(sample=sample), params).fetchone()
        conn.rollback()
    if not considered:
        return ScoreHistogram(bins, None, None, [], [0] * bins, 0, sample, int(query_items))
    return ScoreHistogram(
        bins=bins,
        lo=float(lo),
        hi=float(hi),
        edges=histogram_edges(float(lo), float(hi), bins),
        counts=[int(c) for c in counts],
        considered=int(considered),
        sampled=sample,
        query_items=int(query_items),
    )


# ---- Query strings -----------------------------------------------------------------------------
# Free text plus ``#concept`` terms, e.g. ``"a person riding a bicycle #helmet"``.

_CONCEPT_TERM = re.compile(r"(?<!\S)#([^\s#]+)")


@dataclass(frozen=True)
class ParsedQuery:
    text: str | None  # what remains once the #terms are taken out; None when nothing does
    concepts: tuple[str, ...]  # terms as typed, without '#', in order, deduplicated; the database's
    # concept_tag() turns them into tags (search_context())


def parse_query(query: str) -> ParsedQuery:
    """Split a query into its free text and its ``#concept`` terms.

    >>> parse_query("a dog on a sofa #dog #couch")
    ParsedQuery(text='a dog on a sofa', concepts=('dog', 'couch'))
    >>> parse_query("#traffic_light")
    ParsedQuery(text=None, concepts=('traffic_light',))
    """
    terms = tuple(dict.fromkeys(_CONCEPT_TERM.findall(query)))
    text = " ".join(_CONCEPT_TERM.sub(" ", query).split())
    return ParsedQuery(text=text or None, concepts=terms)
