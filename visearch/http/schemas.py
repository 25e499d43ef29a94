"""Typed request and response bodies of the HTTP API (msgspec Structs; they are the OpenAPI
schemas at ``/schema/openapi.json``).

Units: scores are cosine similarities in [-1, 1] (1 = same direction); boxes are COCO
``[x, y, width, height]`` in pixels of the displayed image (EXIF orientation applied), origin
top-left; times are ISO 8601 with time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar.datastructures import UploadFile
from litestar.params import Parameter
from msgspec import Meta, Struct

MAX_ID = 2**63 - 1
Id = Annotated[int, Meta(ge=1, le=MAX_ID)]
Score = Annotated[float, Meta(ge=-1.0, le=1.0)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
# path parameters (``/v1/datasets/{dataset_id:int}``...)
DatasetId = Annotated[int, Parameter(ge=1, le=MAX_ID, description="dataset id")]
ImageId = Annotated[int, Parameter(ge=1, le=MAX_ID, description="image id")]
AnnotationId = Annotated[int, Parameter(ge=1, le=MAX_ID, description="annotation (box) id")]
CollectionId = Annotated[int, Parameter(ge=1, le=MAX_ID, description="collection id")]
#: Most #concepts in one search (required + excluded + #terms of the text): each unknown one
#: costs a look-up for close names, and 100 of them took 1.8 s.
MAX_QUERY_CONCEPTS = 20


class ErrorBody(Struct):
    """Every error response (4xx, 5xx) has this body."""

    status_code: int
    error: Annotated[str, Meta(description="machine-readable cause, e.g. not_found, invalid_request, "
                                           "unsupported_image, image_too_large, request_too_large")]
    detail: Annotated[str, Meta(description="what was wrong and what to do instead")]
    extra: Any = None


# ---- search -----------------------------------------------------------------------------------

class SearchBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """A search. Give exactly one query source: ``query`` text, ``image_ids``, ``annotation_id``,
    or an uploaded image (multipart, see ``POST /v1/search``); or only ``#concept`` terms (in
    ``query`` or ``concepts``), which rank the concept's items by likeness to their mean vector.
    All filters apply inside the same SQL statement as the vector ordering."""

    mode: Annotated[Literal["images", "objects"] | None, Meta(
        description="return images or objects (annotation boxes); default: objects for an "
                    "annotation_id query, images otherwise")] = None
    query: Annotated[Annotated[str, Meta(max_length=2000)] | None, Meta(
        description="free text and/or #concept terms, e.g. 'a dog on a sofa #couch'. Text needs a "
                    "model with a text tower (CLIP); an image-only model answers 422")] = None
    image_ids: Annotated[list[Id], Meta(
        max_length=1000,
        description="stored images to search by; several: the mean of their unit vectors, "
                    "renormalised ('more like these')")] = []
    annotation_id: Annotated[Id | None, Meta(description="a stored box to search by")] = None
    crop_xywh: Annotated[Annotated[list[float], Meta(min_length=4, max_length=4)] | None, Meta(
        description="with an uploaded image: search by this box of it, COCO [x, y, width, height] "
                    "in pixels of the image as displayed")] = None
    concepts: Annotated[list[Annotated[str, Meta(max_length=200)]], Meta(
        max_length=MAX_QUERY_CONCEPTS, description="required concepts (tags, with or without '#'): images showing all "
                                    "of them (box or label); objects of one of them in such images")] = []
    exclude_concepts: Annotated[list[Annotated[str, Meta(max_length=200)]], Meta(
        max_length=MAX_QUERY_CONCEPTS, description="leave out images showing any of these concepts")] = []
    datasets: Annotated[list[Annotated[str, Meta(max_length=200)]], Meta(
        max_length=100, description="dataset names; empty: every dataset with AI search enabled")] = []
    metadata: Annotated[dict[str, Any] | None, Meta(
        description="images.metadata must contain this JSON object (jsonb @>)")] = None
    created_from: Annotated[datetime | None, Meta(description="images created at or after")] = None
    created_to: Annotated[datetime | None, Meta(description="images created before")] = None
    min_score: Annotated[Score | None, Meta(description="keep hits with cosine similarity >= this")] = None
    max_score: Annotated[Score | None, Meta(description="keep hits with cosine similarity <= this")] = None
    limit: Annotated[int, Meta(ge=1, le=1000, description="items in the first page")] = 20
    depth: Annotated[Annotated[int, Meta(ge=1, le=1000)] | None, Meta(
        description="ranked items kept in the search's collection for paging (>= limit); default "
                    "max(limit, 100). Later pages: GET /v1/collections/{collection_id}")] = None
    model: Annotated[Annotated[str, Meta(max_length=300)] | None, Meta(description="embedding model; default: the server's")] = None
    exact: Annotated[bool | None, Meta(
        description="force an exact scan (true) or the HNSW index (false); default: chosen per query")] = None
    exclude_query_items: Annotated[bool, Meta(
        description="with image_ids / annotation_id: leave those stored items out of the results")] = False
    histogram_bins: Annotated[int, Meta(
        ge=0, le=200, description="bins of the score histogram over the candidates; 0: none")] = 20
    # curation (visearch.curation.refine)
    diversity: Annotated[float, Meta(
        ge=0.0, le=1.0, description="MMR diversity (Carbonell & Goldstein 1998): 0 = the plain ranking, "
                                    "higher = fewer near-copies of a hit; re-ranks 10 x depth candidates")] = 0.0
    expand: Annotated[int, Meta(
        ge=0, le=100, description="average query expansion (Chum et al. 2007): re-query with the mean "
                                  "of the query and its top `expand` hits; 0: none")] = 0
    positive_ids: Annotated[list[Id], Meta(
        max_length=1000, description="relevance feedback: more like these items (image ids, or "
                                     "annotation ids in objects mode); Rocchio weights 1 / 0.75 / 0.15")] = []
    negative_ids: Annotated[list[Id], Meta(
        max_length=1000, description="relevance feedback: less like these items")] = []


class UploadedQueryImage(Struct):
    """The uploaded image a search was made with (its bytes are not kept)."""

    sha256: str
    bytes: int


class ScoreHistogramOut(Struct):
    """Score distribution over the search's candidates (items passing the filters; the score
    range and limit not applied; the query's own stored items left out, as they would score
    1.0). ``bins`` equal-width bins over the observed score range [lo, hi]: bin k covers
    [edges[k], edges[k+1]), the last one is closed. ``sum(counts) == considered``, which is the
    number of candidates other than the query's items unless ``sampled`` (a search on the HNSW
    index over more than 100,000 vectors: a random sample of about 100,000 was scored)."""

    bins: int
    lo: float | None
    hi: float | None
    edges: list[float]
    counts: list[int]
    considered: int
    sampled: bool
    range: Literal["observed"] = "observed"


class CoverageOut(Struct):
    """Present while some searched items have no vector for the model yet: the search ranked
    the `ready` ones (see `visearch status`)."""

    kind: Literal["image", "object"]
    total: int
    ready: int
    queued: int
    failed: int
    unqueued: int


class ResultItem(Struct):
    """One ranked image or object."""

    rank: Annotated[int, Meta(description="1 = best; frozen at search time")]
    score: Annotated[float, Meta(description="cosine similarity to the query, in [-1, 1]")]
    image_id: int
    annotation_id: int | None
    dataset: str
    file_name: str | None
    width: Annotated[int, Meta(description="image width, pixels")]
    height: Annotated[int, Meta(description="image height, pixels")]
    external_id: str | None
    bbox_xywh: Annotated[list[float] | None, Meta(description="objects: the box, COCO [x, y, w, h] pixels")]
    concept: str | None
    iscrowd: bool | None
    image_url: str
    thumbnail_url: str
    crop_url: str | None


class SearchResponse(Struct):
    """The first page of a search. The whole ranking (``total`` items, at most ``depth``) is
    kept as the caller's temporary collection ``collection_id``: read the next pages from
    ``next_url`` (exactly the same ranking, whatever changes meanwhile). The caller's next
    search replaces it unless it is saved."""

    collection_id: int
    mode: Literal["images", "objects"]
    model: str
    query_source: Annotated[str, Meta(description="text | image | image_ids | annotation | concepts")]
    exact: Annotated[bool, Meta(description="true: exact scan; false: HNSW index (approximate)")]
    candidates: Annotated[int, Meta(description="items that passed the filters, before score range and limit "
                                                "(when known: see candidates_capped)")]
    candidates_capped: Annotated[bool, Meta(description="true: there are at least `candidates` (nothing counts "
                                                        "them when the ranking fills its page and the histogram "
                                                        "is sampled or off)")]
    total: Annotated[int, Meta(description="ranked items kept in the collection (<= depth)")]
    offset: int
    limit: int
    items: list[ResultItem]
    next_offset: int | None
    next_url: str | None
    note: Annotated[str | None, Meta(
        description="why fewer items than asked for were found, when so: the filters matched "
                    "fewer, or the score range cut them; or embeddings are still being prepared")]
    coverage: CoverageOut | None
    histogram: ScoreHistogramOut | None


# ---- collections ------------------------------------------------------------------------------

class CollectionOut(Struct):
    id: int
    name: str | None
    saved: Annotated[bool, Meta(description="false: the owner's temporary collection (their last search)")]
    mode: Literal["images", "objects"]
    model: str
    query: Annotated[SearchBody, Meta(description="the search that made it")]
    uploaded_image: UploadedQueryImage | None
    exact: bool
    candidates: int
    note: str | None
    items: int
    images: Annotated[int, Meta(description="distinct images among the items")]
    created_at: datetime
    saved_at: datetime | None


class CollectionPage(Struct):
    """A collection and one page of its items in rank order."""

    collection: CollectionOut
    offset: int
    limit: int
    total: int
    items: list[ResultItem]
    next_offset: int | None
    next_url: str | None
    histogram: ScoreHistogramOut | None


class SaveBody(Struct, forbid_unknown_fields=True):
    name: Annotated[Name, Meta(description="unique among your saved collections")]


class TagBody(Struct, forbid_unknown_fields=True):
    concepts: Annotated[list[Name], Meta(min_length=1, max_length=100,
                                         description="concept names; created if new")]
    image_ids: Annotated[list[Id], Meta(max_length=1000, description=(
        "only these images of the collection (e.g. the selected ones); empty: all of them"))] = []


class TagResponse(Struct):
    images: int
    concepts: list[str]
    concepts_created: int
    labels_added: int
    images_tagged: Annotated[int, Meta(description="images that still existed and were labelled")] = 0
    images_gone: Annotated[list[int], Meta(description="ids of images deleted before they could be labelled")] = []


class UntagResponse(Struct):
    removed: Annotated[int, Meta(description="labels removed (source 'collection' only)")]


class CopyBody(Struct, forbid_unknown_fields=True):
    dataset: Annotated[Name, Meta(description="target dataset name")]
    create: Annotated[bool, Meta(description="create the dataset if missing")] = False
    annotations: Annotated[bool, Meta(description="copy the images' boxes too")] = False


class CopyResponse(Struct):
    dataset_id: int
    dataset: str
    images: int
    images_copied: Annotated[int, Meta(description="new image rows, queued for embedding")]
    images_existing: Annotated[int, Meta(description="already in the target dataset (same bytes)")]
    labels_copied: int
    annotations_copied: int


# ---- datasets, images -------------------------------------------------------------------------

class DatasetBody(Struct, forbid_unknown_fields=True):
    name: Name
    description: Annotated[str, Meta(max_length=10_000)] = ""
    metadata: dict[str, Any] = {}


class DatasetOut(Struct):
    id: int
    name: str
    description: str
    search_enabled: Annotated[bool, Meta(description="false: left out of search and of automatic embedding")]
    metadata: dict[str, Any]
    created_at: datetime
    images: int
    annotations: int


class ModelStatusOut(Struct):
    """One model's embeddings of the dataset (counts of items: images + boxes)."""

    model: str
    model_active: bool
    images: int
    objects: int
    items: int
    embedded: Annotated[int, Meta(description="items with a vector for the model")]
    stale: Annotated[int, Meta(description="queued: new or changed, waiting, being embedded or retrying")]
    retrying: int
    in_progress: int
    failed: Annotated[int, Meta(description="given up on after the attempt limit")]
    covered: Annotated[bool, Meta(description="nothing stale: every item is searchable with this model")]
    workers: Annotated[int, Meta(description="live workers embedding this model")]
    rate: Annotated[float | None, Meta(description="their summed rate, items/s")]
    eta_seconds: float | None
    index_missing: Annotated[list[str], Meta(
        description="vector kinds ('image', 'object') with vectors but no valid HNSW index: searches of "
                    "them scan exactly until the next embed run or worker pass builds it")] = []


class FailureOut(Struct):
    """Failed or retrying items grouped by model, kind and reason."""

    model: str
    item_kind: str
    given_up: bool
    reason: str
    items: int
    max_attempts: int
    example: str | None
    example_ids: list[int]


class WorkerOut(Struct):
    worker_id: str
    model: str
    host: str
    pid: int
    state: Annotated[str, Meta(description="idle | embedding | stopped | dead")]
    started_at: datetime
    heartbeat_at: datetime
    items_done: int
    failures: int
    rate: float | None
    backlog: int | None


class EmbedJobOut(Struct):
    """This server process's background embedding job."""

    running: bool
    pending_datasets: list[int]
    current_datasets: list[int]
    model: str
    started_at: datetime | None
    finished_at: datetime | None
    last_summary: str | None
    last_error: str | None
    embedded_total: int


class DatasetStatusOut(Struct):
    """What `visearch status -d NAME` shows, plus this server's own embedding job."""

    dataset: DatasetOut
    models: list[ModelStatusOut]
    failures: list[FailureOut]
    workers: Annotated[list[WorkerOut], Meta(description="every embedding worker process, all datasets")]
    job: EmbedJobOut


class EmbedTriggerOut(Struct):
    dataset_id: int
    queued: Annotated[int, Meta(description="items of the dataset queued (not failed), all active models")]
    handled_by: Annotated[Literal["workers", "server"], Meta(
        description="workers: live `visearch worker` processes were notified and embed it; server: "
                    "no live worker, this server embeds it in a background thread")]
    job: EmbedJobOut


@dataclass
class UploadForm:
    """Multipart form of an image upload."""

    file: UploadFile
    metadata: str | None = None  # a JSON object
    labels: str | None = None  # comma-separated concept names
    file_name: str | None = None  # default: the uploaded file's name


class UploadOut(Struct):
    id: int
    dataset_id: int
    created: Annotated[bool, Meta(description="false: the dataset already had these bytes; this is that image")]
    width: int
    height: int
    format: str
    sha256: str
    labels_added: int
    image_url: str


class AnnotationOut(Struct):
    id: int
    bbox: Annotated[list[float], Meta(description="COCO [x, y, w, h] pixels")]
    concept: str | None
    iscrowd: bool
    source: str
    score: float | None


class LabelOut(Struct):
    concept: str
    source: str
    score: float | None


class ImageOut(Struct):
    id: int
    dataset_id: int
    dataset: str
    width: int
    height: int
    format: str
    file_name: str | None
    source_uri: str | None
    external_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    sha256: str
    has_bytes: bool
    annotations: list[AnnotationOut]
    labels: list[LabelOut]
    original_url: str
    thumbnail_url: str


class HealthOut(Struct):
    status: str
    version: str
    api_keys_required: bool


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
