"""Housekeeping and look-ups the web console uses (and any script can): rename and delete a
dataset, find and delete images, image captions, ``#concept`` autocomplete, the models, and a
collection's export (COCO JSON, CSV) and item removal. Logic: :mod:`visearch.housekeeping`,
:mod:`visearch.collections.export`, :mod:`visearch.worker.control`.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Annotated, Literal

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import JSONBody, Parameter
import msgspec
from msgspec import Meta, Struct

from visearch import housekeeping
from visearch import collections as svc
from visearch.collections import export
from visearch.http.controllers.search import image_url, thumbnail_url
from visearch.http.deps import DB
from visearch.http.errors import error_responses
from visearch.http.schemas import MAX_ID, CollectionId, Id, ImageId, Name


class RenameBody(Struct, forbid_unknown_fields=True):
    name: Annotated[Name, Meta(description="the new name (unique among datasets)")]


class DatasetDeletedOut(Struct):
    """What deleting the dataset removed."""

    dataset_id: int
    name: str
    images: int
    annotations: int
    vectors: Annotated[int, Meta(description="image and object vectors, every model")]
    queue_rows: Annotated[int, Meta(description="embedding queue rows, every model")]
    collection_items: Annotated[int, Meta(description="collection items that showed its images")]


class DeleteImagesBody(Struct, forbid_unknown_fields=True):
    image_ids: Annotated[list[Id], Meta(min_length=1, max_length=10_000)]


class DeletedImagesOut(Struct):
    deleted: Annotated[list[int], Meta(description="ids deleted (unknown ids are ignored)")]


class ImageMatchOut(Struct):
    id: int
    dataset_id: int
    dataset: str
    file_name: str | None
    external_id: str | None
    width: int
    height: int
    source_uri: str | None
    created_at: datetime
    image_url: Annotated[str, Meta(description="the original file (relative to this server)")]
    thumbnail_url: str


class CaptionOut(Struct):
    id: int
    text: str
    source: str


class ConceptOut(Struct):
    id: int
    name: str
    tag: Annotated[str, Meta(description="what `#tag` matches in a query")]
    images: Annotated[int, Meta(description="images labelled with it")]
    boxes: Annotated[int, Meta(description="boxes (annotations) of it")]


class ModelOut(Struct):
    name: str
    dim: int
    embeds_text: Annotated[bool, Meta(description="has a text tower: text queries work")]
    is_active: bool
    image_vectors: int
    object_vectors: int
    stale: Annotated[int, Meta(description="queued items, all datasets")]
    failed: int
    serving: Annotated[bool, Meta(description="the model a search over every enabled dataset uses by default")]


class RemovedItemsOut(Struct):
    removed: Annotated[list[int], Meta(description="ranks removed")]


class HousekeepingImageController(Controller):
    path = "/v1/images"
    tags = ["images"]

    @get(sync_to_thread=True, summary="Find images by file name or external id",
         responses=error_responses(400, 401, 422))
    def find(
        self, db: DB,
        q: Annotated[str, Parameter(min_length=1, max_length=1000,
                                    description="a file name or an external id (e.g. the COCO image id)")],
        prefix: Annotated[bool, Parameter(description="match names and ids starting with q")] = False,
        dataset_id: Annotated[int | None, Parameter(ge=1, le=MAX_ID, description="only this dataset")] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 50,
    ) -> list[ImageMatchOut]:
        """Images whose file name or external id is `q` (or starts with it, `prefix=true`), exact
        matches first, in every dataset unless `dataset_id`."""
        return [
            msgspec.convert({**dataclasses.asdict(m), "image_url": image_url(m.id),
                             "thumbnail_url": thumbnail_url(m.id)}, ImageMatchOut)
            for m in housekeeping.find_images(db, q, prefix=prefix, dataset_id=dataset_id, limit=limit)
        ]

    @post("/delete", sync_to_thread=True, status_code=200, summary="Delete images",
          responses=error_responses(400, 401))
    def delete_images(self, db: DB, data: JSONBody[DeleteImagesBody]) -> DeletedImagesOut:
        """Delete images by id with their bytes, labels, captions, boxes, vectors and queue rows
        (`{"image_ids": [...]}`). Unknown ids are ignored; `deleted` lists the ids removed."""
        return DeletedImagesOut(deleted=housekeeping.delete_images(db, data.image_ids))

    @get("/{image_id:int}/captions", sync_to_thread=True, summary="An image's captions",
         responses=error_responses(400, 401, 404))
    def captions(self, db: DB, image_id: ImageId) -> list[CaptionOut]:
        """The image's captions (e.g. COCO captions), oldest first."""
        return [CaptionOut(id=c.id, text=c.text, source=c.source) for c in housekeeping.image_captions(db, image_id)]


class ConceptController(Controller):
    path = "/v1/concepts"
    tags = ["concepts"]

    @get(sync_to_thread=True, summary="Concepts by tag prefix (autocomplete)", responses=error_responses(400, 401))
    def concepts(
        self, db: DB,
        prefix: Annotated[str, Parameter(max_length=200, description="start of the tag; '#' or '-#' ignored")] = "",
        limit: Annotated[int, Parameter(ge=1, le=200)] = 20,
    ) -> list[ConceptOut]:
        """Concepts whose `#tag` starts with `prefix`, most used (images + boxes) first."""
        return [ConceptOut(id=c.id, name=c.name, tag=c.tag, images=c.images, boxes=c.boxes)
                for c in housekeeping.concepts_by_prefix(db, prefix, limit=limit)]


class ModelController(Controller):
    path = "/v1/models"
    tags = ["models"]

    @get(sync_to_thread=True, summary="Embedding models", responses=error_responses(401))
    def models(self, db: DB) -> list[ModelOut]:
        """Registered models (as `visearch model list`): vectors, queue, and which one a search
        uses when it names none (`serving`)."""
        from visearch.admin import list_models

        return [ModelOut(name=m.name, dim=m.dim, embeds_text=m.embeds_text, is_active=m.is_active,
                         image_vectors=m.image_vectors, object_vectors=m.object_vectors, stale=m.queued,
                         failed=m.failed, serving=m.serving) for m in list_models(db)]


class CollectionExportController(Controller):
    path = "/v1/collections"
    tags = ["collections"]

    @get("/{collection_id:int}/export", sync_to_thread=True, summary="Export a collection (COCO JSON or CSV)",
         media_type="application/octet-stream", responses=error_responses(400, 401, 404))
    def export(
        self, request: Request, db: DB, collection_id: CollectionId,
        format: Annotated[Literal["coco", "csv"], Parameter(description="coco: COCO instances JSON; csv")] = "coco",
    ) -> Response[bytes]:
        """COCO instances JSON (images, boxes as [x, y, w, h] pixels, categories = concepts;
        images mode: every box of its images, objects mode: its boxes) or CSV (one row per item
        in rank order), as a download. Re-ingest the COCO file with `visearch ingest FOLDER -d
        NEW --coco FILE` (FOLDER holding the original files)."""
        if format == "csv":
            body = export.export_csv(db, request.user, collection_id).encode()
            media, ext = "text/csv; charset=utf-8", "csv"
        else:
            body = json.dumps(export.export_coco(db, request.user, collection_id)).encode()
            media, ext = "application/json", "json"
        return Response(body, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="collection-{collection_id}.{ext}"'})

    @delete("/{collection_id:int}/items", sync_to_thread=True, status_code=200,
            summary="Remove items from a collection", responses=error_responses(400, 401, 404, 422))
    def remove_items(
        self, request: Request, db: DB, collection_id: CollectionId,
        rank: Annotated[list[int], Parameter(min_items=1, max_items=1000, description="rank of an item (repeat)")],
    ) -> RemovedItemsOut:
        """Remove the items with these ranks (`?rank=3&rank=7`); the rest keep their ranks.
        The images themselves are not touched."""
        return RemovedItemsOut(removed=svc.remove_items(db, request.user, collection_id, rank))
