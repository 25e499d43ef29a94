"""Curation routes: ``POST /v1/sample``, ``GET /v1/datasets/{id}/duplicates``,
``GET /v1/datasets/{id}/suspects`` and ``POST /v1/collections/{id}/feedback``.

Thin: parse, call :mod:`visearch.curation`, shape. A sample is kept as the caller's temporary
collection like a search; feedback re-runs a collection's search with the marked items.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody, Parameter
from msgspec import Meta, Struct

from visearch import admin
from visearch.collections import get_collection
from visearch.curation.duplicates import DEFAULT_THRESHOLD, EDGE_FLOOR
from visearch.errors import InvalidRequestError
from visearch.http.controllers.search import result_item
from visearch.http.deps import DB, AppSettings, Reads
from visearch.http.errors import error_responses
from visearch.http.schemas import CollectionId, DatasetId, ResultItem, SearchBody, SearchResponse

Names = Annotated[list[Annotated[str, Meta(max_length=200)]], Meta(max_length=100)]


class SampleBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """A diverse sample of the items passing the filters (the filters of SearchBody)."""

    n: Annotated[int, Meta(ge=1, le=1000, description="items wanted = k-means clusters")] = 50
    method: Annotated[Literal["centroids", "random"], Meta(
        description="centroids: the item nearest each cluster's centre; random: one random member each")] = "centroids"
    mode: Literal["images", "objects"] = "images"
    datasets: Names = []
    concepts: Names = []
    exclude_concepts: Names = []
    metadata: dict[str, Any] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    model: Annotated[str, Meta(max_length=300)] | None = None
    seed: Annotated[int, Meta(ge=0, le=2**31 - 1, description="same seed, same sample")] = 0


class SampleItem(Struct):
    cluster: int  # 0 = the largest cluster
    cluster_size: int
    item: ResultItem  # score = cosine similarity to the cluster's centre


class SampleResponse(Struct):
    collection_id: int  # your temporary collection (save, tag, copy it like a search's)
    mode: str
    model: str
    method: str
    candidates: int  # items that passed the filters; all were assigned to a cluster
    fitted_on: int  # vectors k-means was fitted on
    items: list[SampleItem]  # largest cluster first
    note: str | None = None


class DuplicateMemberOut(Struct):
    item_id: int
    image_id: int
    dataset: str
    file_name: str | None
    width: int
    height: int
    created_at: datetime
    keeper: bool
    concept: str | None = None
    similarity: float | None = None


class DuplicateGroupOut(Struct):
    keeper: int
    members: list[DuplicateMemberOut]


class ExactDuplicateOut(Struct):
    sha256: str
    images: list[DuplicateMemberOut]


class DuplicatesResponse(Struct):
    dataset_id: int
    dataset: str
    mode: str
    model: str
    threshold: float
    groups: list[DuplicateGroupOut]
    exact: list[ExactDuplicateOut]


class SuspectOut(Struct):
    item_id: int
    image_id: int
    concept: str
    looks_like: str
    share: float
    agreeing: float
    neighbour_ids: list[int]
    neighbour_concepts: list[str]
    scores: list[float]


class FeedbackBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """Marks on a collection's items, by rank (1 = best): + more like these, - less like these."""

    positive_ranks: Annotated[list[Annotated[int, Meta(ge=1, le=100_000)]], Meta(max_length=1000)] = []
    negative_ranks: Annotated[list[Annotated[int, Meta(ge=1, le=100_000)]], Meta(max_length=1000)] = []
    limit: Annotated[int, Meta(ge=1, le=1000)] | None = None


def _member(m, keeper: int | None) -> DuplicateMemberOut:
    return DuplicateMemberOut(item_id=m.item_id, image_id=m.image_id, dataset=m.dataset, file_name=m.file_name,
                              width=m.width, height=m.height, created_at=m.created_at,
                              keeper=m.item_id == keeper, concept=m.concept, similarity=m.similarity)


class CurationController(Controller):
    tags = ["curation"]

    @post("/v1/sample", sync_to_thread=True, status_code=200, opt={"role": "read"},
          summary="Diverse sample", responses=error_responses(400, 401, 404, 422))
    def sample(self, request: Request, db: DB, settings: AppSettings, data: JSONBody[SampleBody]) -> SampleResponse:
        """k-means (k = n, spherical, seeded) over the vectors of the items passing the filters;
        one item per cluster (`centroids`: the nearest to the centre; `random`: a random member),
        largest cluster first. Kept as your temporary collection, like a search."""
        from visearch.curation.sample import sample_to_collection
        from visearch.search import SearchRequest

        req = SearchRequest(mode=data.mode, datasets=tuple(data.datasets), concepts=tuple(data.concepts),
                            exclude_concepts=tuple(data.exclude_concepts), metadata=data.metadata or {},
                            created_from=data.created_from, created_to=data.created_to, model=data.model)
        kept = sample_to_collection(db, request.user, req, data.n, method=data.method, seed=data.seed,
                                    query={"sample": msgspec.to_builtins(data)}, settings=settings)
        result, collection, page = kept.result, kept.collection, kept.page
        items = [SampleItem(cluster=h.cluster, cluster_size=h.cluster_size, item=result_item(i))
                 for h, i in zip(result.hits, page)]
        return SampleResponse(collection_id=collection.id, mode=result.mode, model=result.model,
                              method=result.method, candidates=result.candidates, fitted_on=result.fitted_on,
                              items=items, note=result.note)

    @get("/v1/datasets/{dataset_id:int}/duplicates", sync_to_thread=True, summary="Near-duplicate groups",
         responses=error_responses(400, 401, 404, 422))
    def duplicates(
        self, db: DB, settings: AppSettings, dataset_id: DatasetId,
        threshold: Annotated[float, Parameter(ge=EDGE_FLOOR, le=1.0, description="cosine similarity")] = DEFAULT_THRESHOLD,
        objects: Annotated[bool, Parameter(description="boxes instead of images")] = False,
        model: Annotated[str | None, Parameter(max_length=300)] = None,
    ) -> DuplicatesResponse:
        """Groups of near-duplicate images (or boxes): connected components over HNSW neighbour
        pairs with cosine similarity >= threshold, each with a suggested keeper (most pixels, then
        oldest); and byte-identical images (same sha256) in other datasets."""
        from visearch.curation import find_duplicates

        name = admin.dataset_name(db, dataset_id)
        r = find_duplicates(db, name, threshold=threshold, objects=objects, model=model, settings=settings)
        return DuplicatesResponse(
            dataset_id=dataset_id, dataset=name, mode=r.mode, model=r.model, threshold=r.threshold,
            groups=[DuplicateGroupOut(keeper=g.keeper, members=[_member(m, g.keeper) for m in g.members])
                    for g in r.groups],
            exact=[ExactDuplicateOut(sha256=e.sha256, images=[_member(m, e.images[0].item_id) for m in e.images])
                   for e in r.exact],
        )

    @get("/v1/datasets/{dataset_id:int}/suspects", sync_to_thread=True, summary="Label-error suspects",
         responses=error_responses(400, 401, 404, 422))
    def suspects(
        self, db: DB, settings: AppSettings, dataset_id: DatasetId,
        objects: Annotated[bool, Parameter(description="boxes (true) or images (false)")] = True,
        k: Annotated[int, Parameter(ge=1, le=200)] = 10,
        min_share: Annotated[float, Parameter(gt=0.0, le=1.0)] = 0.5,
        limit: Annotated[int, Parameter(ge=1, le=10_000)] = 100,
        model: Annotated[str | None, Parameter(max_length=300)] = None,
    ) -> list[SuspectOut]:
        """Items whose k nearest labelled neighbours carry another concept in a share >=
        min_share, strongest first, with the concept they look like and the evidence."""
        from visearch.curation import label_error_suspects

        found = label_error_suspects(db, admin.dataset_name(db, dataset_id), objects=objects, k=k, min_share=min_share,
                                     limit=limit, model=model, settings=settings)
        return [msgspec.convert(s.__dict__, SuspectOut) for s in found]

    @post("/v1/collections/{collection_id:int}/feedback", sync_to_thread=True, status_code=200,
          opt={"role": "read"}, summary="Search again with items marked + / -",
          responses=error_responses(400, 401, 404, 422))
    def feedback(self, request: Request, db: DB, reads: Reads, settings: AppSettings, collection_id: CollectionId,
                 data: JSONBody[FeedbackBody]) -> SearchResponse:
        """Relevance feedback (Rocchio 1971) on a search's collection: the items at
        `positive_ranks` pull the query towards them, those at `negative_ranks` push it away;
        the collection's search runs again with them (added to earlier marks) and becomes your
        new temporary collection."""
        from visearch.collections import collection_items
        from visearch.http.controllers.search import _run

        collection = get_collection(db, request.user, collection_id)
        stored = dict(collection.query)
        if "sample" in stored:
            raise InvalidRequestError("feedback applies to a search's collection, not a sample's")
        uploaded = stored.pop("uploaded_image", None)
        ranks = sorted(set(data.positive_ranks) | set(data.negative_ranks))
        if not ranks:
            raise InvalidRequestError("mark at least one item (positive_ranks or negative_ranks)")
        _, items = collection_items(db, request.user, collection_id, offset=ranks[0] - 1,
                                    limit=ranks[-1] - ranks[0] + 1)
        by_rank = {i.rank: (i.annotation_id if collection.mode == "objects" else i.image_id) for i in items}
        missing = [r for r in ranks if r not in by_rank]
        if missing:
            raise InvalidRequestError(f"collection {collection_id} has no item at rank(s) {missing}")
        try:
            body = msgspec.convert(stored, SearchBody)
        except msgspec.ValidationError as exc:
            raise InvalidRequestError(f"collection {collection_id} was not made by a search: {exc}") from exc
        positives = list(dict.fromkeys([*body.positive_ids, *(by_rank[r] for r in data.positive_ranks)]))
        negatives = list(dict.fromkeys([*body.negative_ids, *(by_rank[r] for r in data.negative_ranks)]))
        body = msgspec.structs.replace(body, positive_ids=positives, negative_ids=negatives,
                                       limit=data.limit or body.limit)
        if uploaded is not None:  # the upload is not kept: the marks alone make the query
            if not positives:
                raise InvalidRequestError("this search was by an uploaded image, which is not kept: mark "
                                          "at least one item positive")
        return _run(db, reads, settings, request.user, body, None)
