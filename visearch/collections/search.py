"""A search kept as a collection: what ``POST /v1/search`` does, as a library function.

:func:`search_to_collection` runs the search service over ``depth`` ranked items, computes the
score histogram over its candidates, stores the ranking as the owner's temporary collection
(replacing the previous one) and returns the first page read back from it, so page 1 and every
later page come from the same frozen ranking.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from visearch.collections.service import Collection, CollectionItem, record_search
from visearch.config import Settings
from visearch.db.database import Database
from visearch.errors import InvalidRequestError
from visearch.search.histogram import DEFAULT_MAX_CONSIDERED, ScoreHistogram, score_histogram
from visearch.search.service import SearchRequest, SearchResult, search

if TYPE_CHECKING:
    from visearch.db.routing import ReadRouter

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

