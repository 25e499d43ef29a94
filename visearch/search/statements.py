"""The SQL of a search, composed with :mod:`psycopg.sql` from the named blocks of
``sql/search/statements.sql`` (its statements and the fragments they are built from).

A search ranks with one statement (``rank_images`` / ``rank_objects``) whose shape depends on
its filters, so that the planner can use the right index:

* ``hnsw``: the model's vectors in HNSW order (``e.embedding::vector(dim) <=> q``), the filters
  checked per row; pgvector's iterative scan keeps reading the index until ``limit`` rows pass.
  For no filter or a broad one.
* ``by_concept`` / ``by_dataset``: a selective filter's own index (``annotations_concept`` and
  ``image_labels_concept``; ``images_dataset_external_id``) gives the few candidates, each
  vector is fetched by primary key and ranked exactly. For a filter small enough that exact is
  both cheaper and complete.
* ``scan``: every vector of the model, exact (``exact=True`` without a selective filter, or no
  HNSW index yet).

Only the fragments a request uses go into the statement: the planner sees the filters there
are, and ``visearch search --show-sql`` prints something a person can read and run in psql.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import functools
import re

import psycopg
from psycopg import sql

from visearch.db.prepared import PLACEHOLDER, Prepared, prepared
from visearch.resources import sql_blocks

#: Boxes smaller than this (px², COCO's "small" objects: 32 x 32) stay out of a concept's centroid.
MIN_CENTROID_BOX_AREA = 32 * 32

#: The file of the search's statements and fragments (``-- name: X`` blocks).
STATEMENTS = "search/statements.sql"


def template(name: str) -> str:
    """The statement or fragment ``name`` of ``sql/search/statements.sql``, a psycopg.sql
    template (its ``{placeholders}`` are filled in by :func:`fragment` and :class:`Shape`)."""
    return sql_blocks(STATEMENTS)[name]


def fragment(name: str, **parts: sql.Composable) -> sql.Composed:
    return sql.SQL(template(name)).format(**parts)


@dataclass
class Shape:
    """How one search's candidates are read: ``source`` (FROM) and ``filters`` (ANDed).

    Attributes:
        kind: ``'image'`` | ``'object'``.
        driver: ``'hnsw'`` | ``'scan'`` | ``'by_concept'`` | ``'by_dataset'`` (module docs).
        dim: the model's vector dimension (the HNSW index's expression).
        params: the bound parameters every fragment may use.
    """

    kind: str
    driver: str
    dim: int
    params: dict[str, Any] = field(default_factory=dict)
    #: leave the query's own stored items out of the ranking (the histogram always does)
    exclude_query_items: bool = False
    #: where the query vector comes from: ``'param'`` (bound as ``%(query)s``), or for a search
    #: by one stored item ``'stored_image'`` / ``'stored_box'``: the statement reads that item's
    #: vector itself (fragments ``stored_image_query`` / ``stored_box_query``)
    query_from: str = "param"
    #: pgvector's ``hnsw.ef_search`` for this shape's HNSW ranking (the service's
    #: ``hnsw_ef_search`` rule, set by its ``plan_search``)
    ef_search: int | None = None

    def _as(self, driver: str) -> "Shape":
        return replace(self, driver=driver)

    def query(self) -> sql.Composed:
        """The query vector as SQL: the bound parameter, or the stored item's vector."""
        return fragment({"param": "query_param", "stored_image": "stored_image_query",
                         "stored_box": "stored_box_query"}[self.query_from])

    @property
    def exact(self) -> bool:
        return self.driver != "hnsw"

    def distance(self, *, exact: bool | None = None) -> sql.Composed:
        exact = self.exact if exact is None else exact
        if exact:
            return fragment("distance_exact", query=self.query())
        return fragment("distance_hnsw", dim=sql.Literal(self.dim), query=self.query())

    def _needs_image(self) -> bool:
        """A filter reads the image row (``i``): dataset, metadata, creation time."""
        p = self.params
        return bool(p.get("dataset_ids") is not None or p.get("metadata") is not None
                    or p.get("created_from") or p.get("created_to"))

    def _needs_row_details(self) -> bool:
        p = self.params
        return self._needs_image() or bool(
            self.kind == "object" and (p.get("concept_ids") or p.get("exclude_concept_ids")))

    def source(self, *, sample: bool = False) -> sql.Composed:
        sample_sql = fragment("sample") if sample else sql.SQL("")
        if self.driver == "by_concept":
            # the image row joined only for a filter that reads it; one concept needs no count
            image = sql.SQL("\n") + fragment("join_image" if self.kind == "image" else "join_box_image") \
                if self._needs_image() else sql.SQL("")
            one = self.kind == "image" and len(self.params.get("concept_ids") or []) == 1
            return fragment(f"{self.kind}_by_{'one_' if one else ''}concept", image=image)
        if self.driver == "by_dataset":
            return fragment(f"{self.kind}_{self.driver}")
        name = f"{self.kind}_all_with_{'image' if self.kind == 'image' else 'box'}"
        if not self._needs_row_details():
            name = f"{self.kind}_all"
        return fragment(name, sample=sample_sql)

    def filters(self, *, exact: bool | None = None, min_distance: bool = True,
                exclude_query_items: bool = True, centroid: bool = False) -> sql.Composed:
        p = self.params
        image_id = sql.SQL("e.image_id" if self.kind == "image" else "a.image_id")
        parts: list[sql.Composable] = []
        if p.get("dataset_ids") is not None:
            parts.append(fragment("in_datasets"))
        concepts = p.get("concept_ids") or []
        if self.kind == "image":
            if concepts and self.driver != "by_concept":
                name = "image_shows_concept" if len(concepts) == 1 else "image_shows_concepts"
                parts.append(fragment(name, image_id=image_id))
            if p.get("exclude_concept_ids"):
                parts.append(fragment("image_shows_none", image_id=image_id))
        else:
            if concepts:
                parts.append(fragment("box_concept"))
                if len(concepts) > 1:
                    parts.append(fragment("image_shows_concepts", image_id=image_id))
            if p.get("exclude_concept_ids"):
                parts.append(fragment("box_not_excluded"))
        for name in ("metadata", "created_from", "created_to"):
            if p.get(name) is not None:
                parts.append(fragment(name))
        if centroid and p.get("min_box_area"):
            parts.append(fragment("min_box_area"))
        if min_distance and p.get("min_distance") is not None:
            parts.append(fragment("min_distance", distance=self.distance(exact=exact)))
        if exclude_query_items:
            if p.get("query_image_ids"):
                parts.append(fragment("not_query_images"))
            if p.get("query_annotation_id") is not None:
                parts.append(fragment("not_query_box"))
        if not parts:
            return sql.SQL("true")
        return sql.SQL("\n      AND ").join(parts)

    @property
    def filtered(self) -> bool:
        """Whether rows are checked against filters as they are read (:meth:`filters` has some;
        the query's own items left aside): an HNSW ranking of this shape is an iterative scan
        that skips rows."""
        return self.filters(exclude_query_items=False) != sql.SQL("true")

    def rank(self, *, exact: bool | None = None) -> sql.Composed:
        """The ranking statement (``rank_<kind>s``); ``exact`` overrides the driver's form
        (the under-fill fallback ranks the same candidates exactly)."""
        exact = self.exact if exact is None else exact
        source = self._as("scan") if exact and self.driver == "hnsw" else self
        ranked = fragment(
            "ranked", item=sql.SQL("e.image_id" if self.kind == "image" else "e.annotation_id"),
            source=source.source(), distance=self.distance(exact=exact),
            filters=source.filters(exact=exact, exclude_query_items=self.exclude_query_items),
        )
        return sql.SQL(template(f"rank_{self.kind}s")).format(ranked=ranked)

    def candidates(self) -> sql.Composed:
        """Every item passing the filters, unranked (``candidates``): columns ``item_id``
        (image or annotation id), ``image_id``, ``embedding``. Read from the filter's own index
        when it drives (``by_concept``/``by_dataset``), else from the model's vectors."""
        src = self._as("scan") if self.driver == "hnsw" else self
        if self.kind == "image":
            item_id, image_id, source = sql.SQL("e.image_id"), sql.SQL("e.image_id"), src.source()
        else:  # a box's image id needs the annotation row, whatever the filters
            item_id, image_id = sql.SQL("e.annotation_id"), sql.SQL("a.image_id")
            source = fragment("object_all_with_box", sample=sql.SQL("")) if src.driver == "scan" else src.source()
        return sql.SQL(template("candidates")).format(
            item_id=item_id, image_id=image_id, source=source,
            filters=src.filters(min_distance=False, exclude_query_items=False),
        )

    def query_vector(self) -> sql.Composed:
        """``SELECT`` of the query vector as the ranking statement computes it."""
        return sql.SQL("SELECT {query}::vector").format(query=self.query())

    def centroid(self) -> sql.Composed:
        """The #concept centroid statement (``concept_centroid``) over these candidates."""
        image_id = sql.SQL("e.image_id" if self.kind == "image" else "a.image_id")
        src = self._as("by_concept")  # a centroid needs concepts: their index drives it
        return sql.SQL(template("concept_centroid")).format(
            source=src.source(), filters=src.filters(min_distance=False, centroid=True), dim=sql.Literal(self.dim),
            image_id=image_id,
        )

    def histogram(self, *, sample: bool) -> sql.Composed:
        """The score histogram statement (``score_histogram``) over these candidates, the
        query's own items counted apart; ``sample``: read a TABLESAMPLE of the vector table."""
        src = self._as("scan") if self.driver == "hnsw" else self
        if self.params.get("query_image_ids"):
            is_query = fragment("is_query_image")
        elif self.params.get("query_annotation_id") is not None:
            is_query = fragment("is_query_box")
        else:
            is_query = sql.SQL("false")
        return sql.SQL(template("score_histogram")).format(
            source=src.source(sample=sample), is_query=is_query, distance=self.distance(exact=True),
            filters=src.filters(min_distance=False, exclude_query_items=False),
        )


def hnsw_settings(ef_search: int, max_scan_tuples: int) -> list[tuple[str, str]]:
    """pgvector's settings for an HNSW ranking (transaction-local, set with the statement)."""
    return [("hnsw.ef_search", str(ef_search)), ("hnsw.iterative_scan", "relaxed_order"),
            ("hnsw.max_scan_tuples", str(max_scan_tuples))]


def render(conn: psycopg.Connection, statement: sql.Composable, params: dict[str, Any],
           settings: list[tuple[str, str]] | None = None) -> str:
    """The statement with its parameters written in as literals, runnable as-is in psql; with
    ``settings`` (``hnsw_settings``), wrapped in a transaction that sets them first."""
    text = psycopg.ClientCursor(conn).mogrify(statement, params)
    if not settings:
        return text.rstrip() + ";\n"
    head = "".join(f"SET LOCAL {name} = {value};\n" for name, value in settings)
    return f"BEGIN;\n{head}{text.rstrip()};\nCOMMIT;\n"


#: The parameters a prepared ranking statement keeps bound (:func:`with_literals`): the query.
QUERY_PARAMS = frozenset({"query", "query_image_ids", "query_annotation_id"})


def with_literals(conn: psycopg.Connection | None, statement: sql.Composable, params: dict[str, Any],
                  keep: frozenset[str] = QUERY_PARAMS) -> tuple[str, dict[str, Any]]:
    """``statement`` with every parameter but ``keep`` written in as a literal (psycopg's
    quoting, as :func:`render`; ``conn`` None: psycopg's default adapters), and the parameters
    left to bind.

    For a statement prepared once and run many times: a ranking's plan depends on its model,
    filters and limit, not on which item is the query. With those in the text, its generic plan
    is the plan a custom one would be (the query item's vector is read by an InitPlan either
    way), so it can run with a generic plan from its first execution and is never planned per
    search; with them bound, a generic plan could not use the model's partial HNSW index nor
    see the limit.
    """
    text = statement.as_string(conn) if isinstance(statement, sql.Composable) else statement

    def literal(match: re.Match) -> str:
        name = match.group(1)
        if name in keep:
            return match.group(0)
        return sql.Literal(params[name]).as_string(conn).replace("%", "%%")

    return (PLACEHOLDER.sub(literal, text),
            {name: value for name, value in params.items() if name in keep})


class _RankKey:
    """A shape's ranking statement, hashed by what its text depends on (the shape carries it
    along for :func:`_prepared_rank` to compose on a miss)."""

    __slots__ = ("key", "shape", "exact", "limit")

    def __init__(self, shape: Shape, exact: bool, limit: int) -> None:
        self.shape, self.exact, self.limit = shape, exact, limit
        # repr() tells apart what renders differently (1 and True, a list and a Jsonb, 0.5 and
        # 0.50000001); the type names too (a number type whose repr looks like another's)
        self.key = (shape.kind, shape.driver, shape.dim, shape.query_from, shape.exclude_query_items,
                    exact, limit, repr([(k, type(v).__name__, v) for k, v in shape.params.items()
                                        if k not in QUERY_PARAMS]))

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RankKey) and self.key == other.key


@functools.lru_cache(maxsize=256)
def _prepared_rank(k: _RankKey) -> Prepared:
    text, _ = with_literals(None, k.shape.rank(exact=k.exact), {**k.shape.params, "limit": k.limit})
    return prepared.__wrapped__(text)  # (not in prepared()'s own cache: this one holds it)


def prepared_rank(shape: Shape, *, exact: bool, limit: int) -> Prepared:
    """The ranking statement as it runs prepared on one node (:meth:`Shape.rank`, ``limit``
    rows; :func:`visearch.db.prepared.run`): every parameter but the query written in
    (:func:`with_literals`), the query's ``%(name)s`` numbered ``$n``.

    Cached per process by what the text depends on (kind, driver, dimension, query source,
    exactness, limit and the parameters' values): composing and quoting it took 0.08 ms a
    search (timeit, 100k x 1280-d bench shape).
    """
    return _prepared_rank(_RankKey(shape, exact, limit))
