"""``POST /v1/search`` (JSON, or multipart with an uploaded image) and the links of its items.

The response is filled by field name from the service's objects (``msgspec.convert``: the
service dataclasses and the response Structs of :mod:`visearch.http.schemas` share the names),
plus the links a client follows from a ranked item (its image, thumbnail, crop, the next page),
made here; the other controllers that show images or ranked items use them too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import anyio.to_thread
import msgspec
from litestar import Controller, Request, post
from litestar.datastructures import UploadFile
from litestar.exceptions import ClientException, ValidationException
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)

from visearch.collections.service import CollectionItem, search_to_collection
from visearch.http.deps import DB, AppSettings, Reads
from visearch.http.errors import error_responses
from visearch.http.schemas import (
    MAX_QUERY_CONCEPTS,
    CoverageOut,
    ResultItem,
    ScoreHistogramOut,
    SearchBody,
    SearchResponse,
)
from visearch.search import SearchRequest, parse_query

THUMBNAIL_SIZE = 256


def image_url(image_id: int) -> str:
    return f"/v1/images/{image_id}/original"


def thumbnail_url(image_id: int, size: int = THUMBNAIL_SIZE) -> str:
    return f"/v1/images/{image_id}/thumbnail?size={size}"


def crop_url(annotation_id: int) -> str:
    return f"/v1/annotations/{annotation_id}/crop"


def result_item(i: CollectionItem) -> ResultItem:
    """A ranked item as the API shows it: its fields by name, plus its links."""
    links = {
        "image_url": image_url(i.image_id), "thumbnail_url": thumbnail_url(i.image_id),
        "crop_url": crop_url(i.annotation_id) if i.annotation_id is not None else None,
    }
    return msgspec.convert({**dataclasses.asdict(i), **links}, ResultItem)


def next_page(collection_id: int, offset: int, limit: int, returned: int, total: int) -> tuple[int | None, str | None]:
    """The offset and URL of the page after ``returned`` items from ``offset`` (``None, None``:
    that was the last page)."""
    nxt = offset + returned
    if returned < limit or nxt >= total:
        return None, None
    return nxt, f"/v1/collections/{collection_id}?offset={nxt}&limit={limit}"


@dataclass
class _SearchOperation(Operation):
    """OpenAPI operation of ``POST /v1/search``: one body, two encodings."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=(
                "application/json: a SearchBody. multipart/form-data (search by an uploaded "
                "image): part `image` (the file) and optional part `params` (a SearchBody as a "
                "JSON text; `crop_xywh` crops the upload)."
            ),
            content={
                "application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/SearchBody")),
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=["image"],
                        properties={
                            "image": Schema(type=OpenAPIType.STRING, format="binary",
                                            description="the query image (JPEG, PNG, WebP, GIF, BMP, TIFF, ...)"),
                            "params": Schema(type=OpenAPIType.STRING,
                                             description="SearchBody as a JSON text, e.g. "
                                                         '{"limit": 10, "crop_xywh": [10, 20, 100, 80]}'),
                        },
                    )
                ),
            },
        )


def _decode_body(raw: bytes | str) -> SearchBody:
    try:
        return msgspec.json.decode(raw or b"{}", type=SearchBody)
    except msgspec.ValidationError as exc:
        raise ValidationException(f"invalid search: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ValidationException(f"the search body is not valid JSON: {exc}") from exc


async def _parse(request: Request) -> tuple[SearchBody, bytes | None]:
    content_type = request.content_type[0]
    if content_type == "multipart/form-data":
        form = await request.form()
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise ValidationException("multipart search: the part `image` (a file) is missing")
        params = form.get("params")
        if isinstance(params, UploadFile):
            params = await params.read()
        body = _decode_body(params or b"{}")
        return body, await image.read()
    if content_type in ("application/json", "") or content_type.endswith("+json"):
        return _decode_body(await request.body()), None
    raise ClientException(
        f"unsupported Content-Type {content_type!r}: send application/json or multipart/form-data",
        status_code=415,
    )


def _check_concept_count(body: SearchBody) -> None:
    terms = len(parse_query(body.query).concepts) if body.query else 0
    if terms + len(body.concepts) + len(body.exclude_concepts) > MAX_QUERY_CONCEPTS:
        raise ValidationException(f"a search may name at most {MAX_QUERY_CONCEPTS} concepts "
                                  "(#terms in the query, concepts and exclude_concepts together)")


def _to_request(body: SearchBody, image: bytes | None) -> SearchRequest:
    _check_concept_count(body)
    if body.crop_xywh is not None and image is None:
        from visearch.errors import InvalidRequestError

        raise InvalidRequestError("crop_xywh applies to an uploaded image (multipart part `image`); none was given")
    mode = body.mode or ("objects" if body.annotation_id is not None else "images")
    return SearchRequest(
        mode=mode, query=body.query, image=image, crop_xywh=body.crop_xywh, image_ids=tuple(body.image_ids),
        annotation_id=body.annotation_id, concepts=tuple(body.concepts),
        exclude_concepts=tuple(body.exclude_concepts), datasets=tuple(body.datasets),
        metadata=body.metadata or {}, created_from=body.created_from, created_to=body.created_to,
        limit=body.limit, min_score=body.min_score, max_score=body.max_score, model=body.model,
        exact=body.exact, exclude_query_items=body.exclude_query_items,
    )


def _refinement(body: SearchBody):
    """The body's MMR diversity, query expansion or relevance feedback as a
    :class:`visearch.curation.Refinement`; ``None`` when it asks for none of them (the plain
    search then never reaches the curation package)."""
    if not (body.diversity or body.expand or body.positive_ids or body.negative_ids):
        return None
    from visearch.curation.refine import Refinement

    return Refinement(diversity=body.diversity, expand=body.expand,
                      positive_ids=tuple(body.positive_ids), negative_ids=tuple(body.negative_ids))


def _run(db: DB, reads: Reads, settings: AppSettings, owner: str, body: SearchBody, image: bytes | None) -> SearchResponse:
    kept = search_to_collection(
        db, settings, owner, _to_request(body, image), limit=body.limit, depth=body.depth,
        histogram_bins=body.histogram_bins, query=msgspec.to_builtins(body), reads=reads,
        refinement=_refinement(body),
    )
    c = kept.collection
    nxt, url = next_page(c.id, 0, body.limit, len(kept.page), c.items)
    r = kept.result
    return SearchResponse(
        collection_id=c.id, mode=r.mode, model=r.model, query_source=r.query_source, exact=r.exact,
        candidates=r.candidates, candidates_capped=r.candidates_capped, total=c.items, offset=0, limit=body.limit,
        items=[result_item(i) for i in kept.page], next_offset=nxt, next_url=url, note=r.note,
        coverage=msgspec.convert(r.coverage, CoverageOut | None, from_attributes=True),
        histogram=msgspec.convert(kept.histogram, ScoreHistogramOut | None, from_attributes=True),
    )


class SearchController(Controller):
    path = "/v1/search"
    tags = ["search"]

    @post(
        operation_class=_SearchOperation,
        status_code=200,
        # a POST that changes nothing (but the caller's own last search); ranks on a read
        # replica when there is one (visearch.db.routing)
        opt={"role": "read"},
        summary="Search images or objects",
        responses=error_responses(400, 401, 404, 413, 415, 422),
    )
    async def search(self, request: Request, db: DB, reads: Reads, settings: AppSettings) -> SearchResponse:
        """Rank images (or objects: annotation boxes) by cosine similarity to a query.

        Query by exactly one of: `query` text (with optional `#concept` terms; needs a model
        with a text tower, an image-only model answers 422 naming it); an uploaded image
        (multipart part `image`, optionally cropped with `crop_xywh` = COCO [x, y, w, h] in
        pixels); `image_ids` (several: the mean of their unit vectors, renormalised);
        `annotation_id`; or only `#concept` terms (ranked by likeness to the concept's mean).

        Filters (datasets, required/excluded concepts, metadata containment, created-at range)
        run in the same SQL statement as the vector ordering. `min_score`/`max_score` bound the
        cosine similarity. The response is the first `limit` items; the whole ranking (`depth`
        items) is kept as your temporary collection `collection_id` and `next_url` pages through
        it exactly (`GET /v1/collections/{id}`); your next search replaces it unless you save
        it. `histogram` is the score distribution over all candidates; `exact` says whether
        the ranking was an exact scan or the HNSW index; `note` says why fewer items came back.

        Errors: 400 malformed body; 404 unknown image/annotation/dataset/concept/model; 413
        body or image too large (decompression bomb); 415 not an image; 422 undecodable image,
        invalid box, text on an image-only model, query item not embedded yet.
        """
        body, image = await _parse(request)
        owner: str = request.user
        return await anyio.to_thread.run_sync(partial(_run, db, reads, settings, owner, body, image))

