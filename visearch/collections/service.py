"""Collections service (SQL in ``sql/collections/``).

A collection is a ranked list of images or objects (boxes) with their scores, frozen when it
was made. Every search made through the HTTP API is recorded as its owner's **temporary**
collection (:func:`record_search`); the owner's next search replaces it, so there is at most
one per owner. :func:`save_collection` names it and keeps it. Pages of a collection are read
by rank (:func:`collection_items`), so paging through a search is exactly stable: page 2 is
the continuation of the very ranking page 1 came from, whatever was added or re-embedded since.

:func:`search_to_collection` is what ``POST /v1/search`` does: it runs the search service over
``depth`` ranked items, computes the score histogram over its candidates, stores the ranking as
the owner's temporary collection and returns the first page read back from it, so page 1 and
every later page come from the same frozen ranking.

Owners: every function takes the caller's identity (the API key's name, or ``"anonymous"``)
and only sees that owner's collections; another owner's collection id is "not found".
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from visearch.config import Settings
from visearch.db.database import Database
from visearch.errors import ConflictError, InvalidRequestError, NotFoundError
from visearch.ingest.writer import ensure_concepts, ensure_dataset, lock_dataset_images
from visearch.resources import read_sql, sql_blocks
from visearch.search.service import (
    DEFAULT_MAX_CONSIDERED,
    ScoreHistogram,
    SearchRequest,
    SearchResult,
    score_histogram,
    search,
)

if TYPE_CHECKING:
    from visearch.db.routing import ReadRouter

#: The statements that keep a search as a collection and read collections back (named blocks).
COLLECTION_SQL = "collections/collection.sql"
#: ``image_labels.source`` of labels added by tagging a collection.
COLLECTION_LABEL_SOURCE = "collection"


@dataclass
class Collection:
    id: int
    owner: str
    name: str | None  # None while temporary
    saved: bool
    mode: str  # images | objects
    model: str
    query: dict[str, Any]  # the search parameters that made it
    exact: bool
    candidates: int
    note: str | None
    histogram: dict[str, Any] | None
    created_at: datetime
    saved_at: datetime | None
    items: int  # ranked items kept
    images: int  # distinct images among them


@dataclass
class CollectionItem:
    rank: int  # 1 = best
    score: float  # cosine similarity to the query
    image_id: int
    annotation_id: int | None  # objects mode: the box
    dataset: str
    file_name: str | None
    width: int
    height: int
    external_id: str | None
    bbox_xywh: list[float] | None  # COCO [x, y, w, h] pixels, objects mode
    concept: str | None
    iscrowd: bool | None


@dataclass
class TagReport:
    images: int  # images in the collection
    concepts: list[str]  # the concepts applied (names as stored)
    concepts_created: int
    labels_added: int  # new (image, concept) labels; existing ones are not counted
    images_tagged: int = 0  # images that still existed and got the labels
    images_gone: list[int] = field(default_factory=list)  # deleted before the labels went in


@dataclass
class CopyReport:
    dataset_id: int
    dataset: str
    images: int  # distinct images in the collection
    images_copied: int  # new image rows (queued for embedding by the triggers)
    images_existing: int  # already in the target dataset (same bytes)
    labels_copied: int
    annotations_copied: int


def _lock_owner(conn: psycopg.Connection, owner: str) -> None:
    # Serialises one owner's searches for the instant of replacing the temporary collection.
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('visearch.collections:' || %s, 0))", (owner,))


#: Ranked items kept for paging when the request does not say (at least its limit).
DEFAULT_DEPTH = 100
MAX_DEPTH = 1000


@dataclass
class KeptSearch:
    result: SearchResult  # the service's answer (hits = the whole kept ranking)
    collection: Collection
    page: list[CollectionItem]  # the first `limit` items, read from the collection
    histogram: ScoreHistogram | None


def search_to_collection(
    db: Database,
    settings: Settings,
    owner: str,
    req: SearchRequest,
    *,
    limit: int,
    depth: int | None = None,
    histogram_bins: int = 20,
    query: dict[str, Any] | None = None,
    reads: ReadRouter | None = None,
    refinement=None,
) -> KeptSearch:
    """Search, keep the ranking as ``owner``'s temporary collection, return its first page.

    Args:
        req: the search; its ``limit``/``offset`` are replaced by ``depth``/0.
        limit: items in the first page.
        depth: ranked items kept (>= limit); default max(limit, DEFAULT_DEPTH), at most MAX_DEPTH.
        histogram_bins: 0 for no histogram.
        query: the request's parameters as JSON, stored with the collection.
        reads: where the search and the histogram run (a replica, see visearch.db.routing);
            default ``db``. The collection is always written and read back on ``db``.
        refinement: a :class:`visearch.curation.Refinement` (MMR, query expansion, feedback).

    Raises:
        InvalidRequestError, NotFoundError, NotEmbeddedError: as :func:`visearch.search.search`;
        ``depth < limit``.
    """
    if depth is None:
        depth = min(MAX_DEPTH, max(limit, DEFAULT_DEPTH))
    if depth < limit:
        raise InvalidRequestError(f"depth ({depth}) must be at least limit ({limit})")
    def ranked(read_db: Database) -> tuple[SearchResult, ScoreHistogram | None]:
        ranked_req = dataclasses.replace(req, limit=depth, offset=0)
        if refinement is not None and refinement.active:
            from visearch.curation.refine import refined_search

            result = refined_search(read_db, ranked_req, refinement, settings)
        else:
            result = search(read_db, ranked_req, settings)
        histogram = None
        if histogram_bins and getattr(result, "shape", None) is not None:
            histogram = score_histogram(read_db, result, bins=histogram_bins, max_considered=DEFAULT_MAX_CONSIDERED)
            if not histogram.sampled and result.candidates_capped:
                # every candidate was scored (less the query's own items): now the count is known
                result.candidates = histogram.considered + (0 if req.exclude_query_items else histogram.query_items)
                result.candidates_capped = False
        return result, histogram

    result, histogram = reads.run(ranked, owner=owner) if reads is not None else ranked(db)
    stored = dict(query or {})
    if req.image is not None:
        stored["uploaded_image"] = {"sha256": hashlib.sha256(req.image).hexdigest(), "bytes": len(req.image)}
    collection, page = record_search(
        db, owner, result, query=stored,
        histogram=dataclasses.asdict(histogram) if histogram is not None else None,
        page_limit=limit,
    )
    return KeptSearch(result=result, collection=collection, page=page, histogram=histogram)


def record_search(
    db: Database,
    owner: str,
    result: SearchResult,
    *,
    query: dict[str, Any],
    histogram: dict[str, Any] | None = None,
    page_limit: int = 50,
) -> tuple[Collection, list[CollectionItem]]:
    """Store ``result`` as ``owner``'s temporary collection, replacing the previous one.

    Args:
        query: the search parameters, as JSON (kept with the collection, shown by the API).
        histogram: the score distribution, as JSON, if computed.
        page_limit: items of the first page to return.

    Returns:
        The new collection and its first page, read in the same transaction (so a concurrent
        search by the same owner cannot replace it in between).
    """
    objects = result.mode == "objects"
    hits = result.hits
    with db.pooled() as conn:
        _lock_owner(conn, owner)
        conn.execute("DELETE FROM collections WHERE owner = %s AND NOT saved", (owner,))
        collection_id = conn.execute(
            sql_blocks(COLLECTION_SQL)["insert_search"],
            {
                "owner": owner, "name": None, "mode": result.mode, "model": result.model,
                "query": Jsonb(query), "exact": result.exact, "candidates": result.candidates,
                "note": result.note, "histogram": Jsonb(histogram) if histogram is not None else None,
                "ranks": list(range(1, len(hits) + 1)),
                "image_ids": [h.image_id for h in hits],
                "annotation_ids": [h.annotation_id if objects else None for h in hits],
                "scores": [float(h.score) for h in hits],
            },
        ).fetchone()[0]
        return _one(conn, owner, collection_id), _page(conn, collection_id, 0, page_limit)


def _select(conn, owner: str, *, collection_id: int | None = None, saved: bool | None = None) -> list[Collection]:
    with conn.cursor(row_factory=class_row(Collection)) as cur:
        return cur.execute(
            sql_blocks(COLLECTION_SQL)["select_collections"],
            {"owner": owner, "id": collection_id, "saved": saved},
        ).fetchall()


def _one(conn, owner: str, collection_id: int) -> Collection:
    found = _select(conn, owner, collection_id=collection_id)
    if not found:
        raise NotFoundError(
            f"no collection {collection_id}: it never existed, belongs to another owner, was "
            "deleted, or was a temporary collection replaced by a newer search (save a "
            "search's collection to keep it)"
        )
    return found[0]


def list_collections(db: Database, owner: str, *, saved: bool | None = None) -> list[Collection]:
    """``owner``'s collections, newest first (``saved``: only saved / only temporary)."""
    with db.pooled() as conn:
        return _select(conn, owner, saved=saved)


def get_collection(db: Database, owner: str, collection_id: int) -> Collection:
    """Raises: NotFoundError: no such collection of ``owner``."""
    with db.pooled() as conn:
        return _one(conn, owner, collection_id)


def collection_items(
    db: Database, owner: str, collection_id: int, *, offset: int = 0, limit: int = 50
) -> tuple[Collection, list[CollectionItem]]:
    """The collection and one page of its items, best first.

    Raises:
        NotFoundError: no such collection of ``owner``.
        InvalidRequestError: negative offset or limit < 1.
    """
    if offset < 0 or limit < 1:
        raise InvalidRequestError(f"offset must be >= 0 and limit >= 1 (got {offset}, {limit})")
    with db.pooled() as conn:
        collection = _one(conn, owner, collection_id)
        return collection, _page(conn, collection_id, offset, limit)


def _page(conn, collection_id: int, offset: int, limit: int) -> list[CollectionItem]:
    with conn.cursor(row_factory=class_row(CollectionItem)) as cur:
        return cur.execute(
            sql_blocks(COLLECTION_SQL)["items_page"],
            {"collection_id": collection_id, "offset": offset, "limit": limit},
        ).fetchall()


def save_collection(db: Database, owner: str, collection_id: int, name: str) -> Collection:
    """Name a collection and keep it (a saved one is renamed).

    Raises:
        NotFoundError: no such collection of ``owner``.
        InvalidRequestError: empty name.
        ConflictError: ``owner`` already has a saved collection with that name.
    """
    name = (name or "").strip()
    if not name:
        raise InvalidRequestError("a saved collection needs a non-empty name")
    with db.pooled() as conn:
        _lock_owner(conn, owner)
        _one(conn, owner, collection_id)
        clash = conn.execute(
            "SELECT id FROM collections WHERE owner = %s AND saved AND name = %s AND id <> %s",
            (owner, name, collection_id),
        ).fetchone()
        if clash:
            raise ConflictError(f"you already have a saved collection named {name!r} (id {clash[0]})")
        conn.execute("UPDATE collections SET name = %s, saved = true WHERE id = %s", (name, collection_id))
        # first save only; a separate statement, not coalesce(saved_at, now()): Citus refuses a
        # non-immutable function inside COALESCE or CASE when it writes a reference table
        conn.execute("UPDATE collections SET saved_at = now() WHERE id = %s AND saved_at IS NULL", (collection_id,))
        return _one(conn, owner, collection_id)


def delete_collection(db: Database, owner: str, collection_id: int) -> None:
    """Raises: NotFoundError: no such collection of ``owner``."""
    with db.pooled() as conn:
        deleted = conn.execute(
            "DELETE FROM collections WHERE id = %s AND owner = %s RETURNING id", (collection_id, owner)
        ).fetchone()
    if deleted is None:
        with db.pooled() as conn:
            _one(conn, owner, collection_id)  # raises the explanatory NotFoundError


def _concept_names(concepts: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(c.strip().lstrip("#").strip() for c in concepts if c and c.strip().lstrip("#").strip()))
    if not names:
        raise InvalidRequestError("give at least one concept name")
    return names


def tag_images(
    db: Database, owner: str, collection_id: int, concepts: Sequence[str], *, image_ids: Sequence[int] = ()
) -> TagReport:
    """Label every image of the collection (or only ``image_ids`` among them) with each concept
    (created if new).

    The labels go into ``image_labels`` with source ``'collection'``, so they are concept
    filters for search (``#concept``) at once and :func:`untag_images` removes exactly them.
    Images deleted meanwhile, even while this runs, are skipped and listed in
    ``images_gone``; the others are tagged.

    Raises:
        NotFoundError: no such collection of ``owner``.
        InvalidRequestError: no concept names.
    """
    names = _concept_names(concepts)
    with db.pooled() as conn:
        collection = _one(conn, owner, collection_id)
        ids, created = ensure_concepts(conn, names)
        concept_ids = list(dict.fromkeys(ids[n] for n in names))
        listed = [r[0] for r in conn.execute(
            "SELECT DISTINCT image_id FROM collection_items WHERE collection_id = %s"
            " AND (%s::bigint[] IS NULL OR image_id = ANY (%s::bigint[])) ORDER BY image_id",
            (collection_id, list(image_ids) or None, list(image_ids) or None))]
        params = {"image_ids": listed, "concept_ids": concept_ids, "source": COLLECTION_LABEL_SOURCE}
        for attempt in range(3):
            try:
                with conn.transaction():  # a savepoint: an image deleted meanwhile fails only this
                    added = conn.execute(read_sql("collections/tag_images.sql"), params).rowcount
                break
            except psycopg.errors.ForeignKeyViolation:
                if attempt == 2:
                    raise
        present = {r[0] for r in conn.execute("SELECT id FROM images WHERE id = ANY (%s)", (listed,))}
        tagged, gone = len(present), [i for i in listed if i not in present]
        stored = [r[0] for r in conn.execute(
            "SELECT name FROM concepts WHERE id = ANY(%s) ORDER BY array_position(%s, id)",
            (concept_ids, concept_ids),
        )]
    return TagReport(images=collection.images, concepts=stored, concepts_created=created, labels_added=added,
                     images_tagged=tagged, images_gone=list(gone))


def untag_images(db: Database, owner: str, collection_id: int, concepts: Sequence[str]) -> int:
    """Remove the collection-made labels (source ``'collection'``) of these concepts from the
    collection's images; returns how many labels were removed. Unknown concepts remove nothing.

    Raises:
        NotFoundError: no such collection of ``owner``.
        InvalidRequestError: no concept names.
    """
    names = _concept_names(concepts)
    with db.pooled() as conn:
        _one(conn, owner, collection_id)
        concept_ids = [r[0] for r in conn.execute(
            "SELECT id FROM concepts WHERE name = ANY(%s) OR tag = ANY(ARRAY(SELECT concept_tag(n) FROM unnest(%s::text[]) n))",
            (names, names),
        )]
        removed = conn.execute(
            read_sql("collections/untag_images.sql"),
            {"collection_id": collection_id, "concept_ids": concept_ids, "source": COLLECTION_LABEL_SOURCE},
        ).fetchall()
    return len(removed)


def copy_images(
    db: Database,
    owner: str,
    collection_id: int,
    dataset: str,
    *,
    create: bool = False,
    with_annotations: bool = False,
) -> CopyReport:
    """Copy the collection's images (rows, bytes, labels; boxes if ``with_annotations``) into
    ``dataset``. New rows are queued for embedding by the database triggers.

    Raises:
        NotFoundError: no such collection of ``owner``; ``dataset`` unknown and not ``create``.
        InvalidRequestError: empty dataset name.
    """
    name = (dataset or "").strip()
    if not name:
        raise InvalidRequestError("give the name of the dataset to copy into")
    with db.pooled() as conn:
        collection = _one(conn, owner, collection_id)
        if create:
            dataset_id = ensure_dataset(conn, name)
            # committed first, as ingest does: on Citus the shards' queue triggers reach the
            # coordinator over their own connections, which see committed datasets only
            conn.commit()
        else:
            row = conn.execute("SELECT id FROM datasets WHERE name = %s", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"unknown dataset {name!r}: create it first, or pass create=true")
            dataset_id = row[0]
        lock_dataset_images(conn, dataset_id)  # one image per (dataset, sha256), as ingest keeps it
        rows = conn.execute(
            read_sql("collections/copy_images.sql"), {"collection_id": collection_id, "dataset_id": dataset_id}
        ).fetchall()
        pairs = [(source, new) for source, new in rows if new is not None]
        labels, boxes = conn.execute(
            read_sql("collections/copy_image_details.sql"),
            {
                "source_ids": [p[0] for p in pairs],
                "new_ids": [p[1] for p in pairs],
                "with_annotations": with_annotations,
            },
        ).fetchone()
    return CopyReport(
        dataset_id=int(dataset_id), dataset=name, images=collection.images, images_copied=len(pairs),
        images_existing=len(rows) - len(pairs), labels_copied=int(labels), annotations_copied=int(boxes),
    )


def remove_items(db: Database, owner: str, collection_id: int, ranks: Sequence[int]) -> list[int]:
    """Remove items from the collection by rank; the others keep their ranks. Returns the ranks
    removed (unknown ranks are ignored), ascending.

    Raises:
        NotFoundError: no such collection of ``owner``. InvalidRequestError: no ranks.
    """
    wanted = sorted({int(r) for r in ranks})
    if not wanted:
        raise InvalidRequestError("give the ranks of the items to remove")
    with db.pooled() as conn:
        _one(conn, owner, collection_id)
        removed = conn.execute(read_sql("collections/remove_items.sql"),
                               {"collection_id": collection_id, "ranks": wanted}).fetchall()
    return sorted(r[0] for r in removed)
