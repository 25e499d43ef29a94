"""``/v1/collections``: the caller's searches kept as collections."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody, Parameter

from visearch import collections as svc
from visearch.http.controllers.search import next_page, result_item
from visearch.http.deps import DB
from visearch.http.errors import error_responses
from visearch.http.schemas import (
    CollectionId,
    CollectionOut,
    CollectionPage,
    CopyBody,
    CopyResponse,
    SaveBody,
    ScoreHistogramOut,
    SearchBody,
    TagBody,
    TagResponse,
    UntagResponse,
    UploadedQueryImage,
)


def collection_out(c: svc.Collection) -> CollectionOut:
    """The collection's fields by name; the search that made it as a :class:`SearchBody`."""
    stored = dict(c.query or {})
    uploaded = stored.pop("uploaded_image", None)
    try:
        query = msgspec.convert(stored, SearchBody)
    except msgspec.ValidationError:  # written by another client: show what can be shown
        query = SearchBody()
    return msgspec.convert({
        **dataclasses.asdict(c), "query": query,
        "uploaded_image": msgspec.convert(uploaded, UploadedQueryImage) if uploaded else None,
    }, CollectionOut)


class CollectionController(Controller):
    path = "/v1/collections"
    tags = ["collections"]

    @get(sync_to_thread=True, summary="List your collections", responses=error_responses(400, 401))
    def list_collections(
        self, request: Request, db: DB,
        saved: Annotated[bool | None, Parameter(description="only saved (true) or only the temporary one (false)")] = None,
    ) -> list[CollectionOut]:
        """Your collections, newest first: the saved ones and your temporary one (your last
        search). Other owners' collections are not visible."""
        return [collection_out(c) for c in svc.list_collections(db, request.user, saved=saved)]

    @get("/{collection_id:int}", sync_to_thread=True, summary="A collection and a page of its items",
         responses=error_responses(400, 401, 404))
    def get_collection(
        self, request: Request, db: DB, collection_id: CollectionId,
        offset: Annotated[int, Parameter(ge=0, le=1_000_000, description="items to skip")] = 0,
        limit: Annotated[int, Parameter(ge=1, le=1000, description="items in the page")] = 50,
    ) -> CollectionPage:
        """The collection (with the search that made it and its score histogram) and the items
        `offset`..`offset+limit` in rank order. Ranks were frozen when the search ran, so pages
        are exactly stable: the same offset always gives the same items (an item whose image or
        box was deleted since drops out; the rest keep their order). `next_url` is the next
        page, null at the end. 404 also when a temporary collection was replaced by your next
        search: save a collection to keep it."""
        c, items = svc.collection_items(db, request.user, collection_id, offset=offset, limit=limit)
        nxt, url = next_page(c.id, offset, limit, len(items), c.items)
        return CollectionPage(
            collection=collection_out(c), offset=offset, limit=limit, total=c.items,
            items=[result_item(i) for i in items], next_offset=nxt, next_url=url,
            histogram=msgspec.convert(c.histogram, ScoreHistogramOut | None, from_attributes=True),
        )

    @post("/{collection_id:int}/save", sync_to_thread=True, status_code=200, summary="Save a collection",
          responses=error_responses(400, 401, 404, 409))
    def save(self, request: Request, db: DB, collection_id: CollectionId, data: JSONBody[SaveBody]) -> CollectionOut:
        """Name the collection and keep it until deleted (your later searches no longer replace
        it). Saving a saved collection renames it. 409 if you have another saved collection
        with that name."""
        return collection_out(svc.save_collection(db, request.user, collection_id, data.name))

    @delete("/{collection_id:int}", sync_to_thread=True, summary="Delete a collection",
            responses=error_responses(400, 401, 404))
    def delete_collection(self, request: Request, db: DB, collection_id: CollectionId) -> None:
        """Delete the collection (its images are not touched). 204 on success."""
        svc.delete_collection(db, request.user, collection_id)

    @post("/{collection_id:int}/tags", sync_to_thread=True, status_code=200, summary="Tag a collection's images",
          responses=error_responses(400, 401, 404, 422))
    def tag(self, request: Request, db: DB, collection_id: CollectionId, data: JSONBody[TagBody]) -> TagResponse:
        """Label every image of the collection (or only `image_ids` among them) with each concept
        (concepts are created if new).
        Labels are stored with source 'collection' and are searchable at once as `#concept`
        filters; labels that exist already are left as they are. Images deleted meanwhile are
        skipped and listed in `images_gone`; the rest are tagged."""
        r = svc.tag_images(db, request.user, collection_id, data.concepts, image_ids=data.image_ids)
        return TagResponse(images=r.images, concepts=r.concepts, concepts_created=r.concepts_created,
                           labels_added=r.labels_added, images_tagged=r.images_tagged, images_gone=r.images_gone)

    @delete("/{collection_id:int}/tags", sync_to_thread=True, status_code=200,
            summary="Remove tags from a collection's images", responses=error_responses(400, 401, 404, 422))
    def untag(
        self, request: Request, db: DB, collection_id: CollectionId,
        concept: Annotated[list[str], Parameter(min_items=1, max_items=100,
                                                description="concept name (repeat for several)")],
    ) -> UntagResponse:
        """Remove the labels that tagging a collection added (source 'collection') for these
        concepts from the collection's images. Labels from other sources (COCO, folders,
        people) stay."""
        return UntagResponse(removed=svc.untag_images(db, request.user, collection_id, concept))

    @post("/{collection_id:int}/copy", sync_to_thread=True, status_code=200,
          summary="Copy a collection's images into a dataset", responses=error_responses(400, 401, 404, 422))
    def copy(self, request: Request, db: DB, collection_id: CollectionId, data: JSONBody[CopyBody]) -> CopyResponse:
        """New image rows in the target dataset with the same bytes (stored again in the
        database), size, file name, metadata and labels (and boxes with `annotations: true`).
        Images whose bytes the dataset already has are skipped. The database triggers queue the
        new rows for embedding: `POST /v1/datasets/{id}/embed` (or a worker) embeds them."""
        r = svc.copy_images(db, request.user, collection_id, data.dataset, create=data.create,
                            with_annotations=data.annotations)
        return CopyResponse(dataset_id=r.dataset_id, dataset=r.dataset, images=r.images,
                            images_copied=r.images_copied, images_existing=r.images_existing,
                            labels_copied=r.labels_copied, annotations_copied=r.annotations_copied)
