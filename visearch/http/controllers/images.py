"""``/v1/images`` and ``/v1/annotations``: image details, original bytes, thumbnails, crops."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, Parameter

from visearch import catalog
from visearch.http.controllers.search import image_url, thumbnail_url
from visearch.http.deps import DB, AppSettings, Reads
from visearch.http.errors import error_responses
from visearch.http.schemas import AnnotationId, ImageId, ImageOut

_CACHE = {"Cache-Control": "private, max-age=3600"}


class ImageController(Controller):
    path = "/v1/images"
    tags = ["images"]

    @get("/{image_id:int}", sync_to_thread=True, summary="An image's details", responses=error_responses(400, 401, 404))
    def get_image(self, db: DB, image_id: ImageId) -> ImageOut:
        """Dataset, size in pixels (as displayed), format, file name, metadata, its boxes (COCO
        [x, y, w, h] pixels) and labels."""
        d = catalog.get_image(db, image_id)
        return msgspec.convert(
            {**dataclasses.asdict(d), "original_url": image_url(d.id), "thumbnail_url": thumbnail_url(d.id)},
            ImageOut, strict=False,
        )

    @get("/{image_id:int}/original", sync_to_thread=True, summary="The original file",
         media_type="image/*", responses=error_responses(400, 401, 403, 404))
    def original(self, db: DB, settings: AppSettings, image_id: ImageId) -> Response[bytes]:
        """The image file byte for byte, with its own Content-Type (image/jpeg, image/png, ...).
        404 also when it was ingested by reference and the file is gone; 403 when that file
        lies outside the media roots (VISEARCH_MEDIA_ROOTS, default: the folders ingested from)."""
        data, fmt = catalog.image_original(db, image_id, media_roots=settings.media_roots)
        return Response(data, media_type=catalog.mime_type(fmt), headers=_CACHE)

    @get("/{image_id:int}/thumbnail", sync_to_thread=True, summary="A JPEG thumbnail",
         media_type="image/jpeg", responses={**error_responses(400, 401, 403, 404, 413, 415, 422),
                                             304: ResponseSpec(None, description="not modified (If-None-Match)")})
    def thumbnail(
        self, request: Request, reads: Reads, settings: AppSettings, image_id: ImageId,
        size: Annotated[int, Parameter(ge=catalog.MIN_THUMBNAIL, le=catalog.MAX_THUMBNAIL,
                                       description="longest side in pixels (never enlarged)")] = 256,
        if_none_match: Annotated[str | None, HeaderParameter(name="If-None-Match", required=False,
                                                             description="an ETag from an earlier answer")] = None,
    ) -> Response[bytes]:
        """The image as displayed (EXIF orientation applied), scaled to fit `size` x `size`
        pixels with its aspect ratio kept, as JPEG. `ETag` is the image's sha256 and the size:
        send it back in `If-None-Match` and an unchanged thumbnail answers 304 with no body.
        Thumbnails are cached by the server; large images are decoded scaled (JPEG) and a few
        at a time."""
        t = reads.run(lambda d: catalog.image_thumbnail(d, image_id, size, max_pixels=settings.max_image_pixels,
                                                        media_roots=settings.media_roots,
                                                        if_none_match=if_none_match),
                      owner=request.user)
        headers = {**_CACHE, "ETag": t.etag}
        if t.data is None:
            return Response(b"", status_code=304, headers=headers)
        return Response(t.data, media_type="image/jpeg", headers=headers)


class AnnotationController(Controller):
    path = "/v1/annotations"
    tags = ["images"]

    @get("/{annotation_id:int}/crop", sync_to_thread=True, summary="The crop of a box",
         media_type="image/jpeg", responses=error_responses(400, 401, 403, 404, 413, 415, 422))
    def crop(
        self, db: DB, settings: AppSettings, annotation_id: AnnotationId,
        size: Annotated[int | None, Parameter(ge=catalog.MIN_THUMBNAIL, le=catalog.MAX_THUMBNAIL,
                                              description="scale to at most this longest side, pixels")] = None,
    ) -> Response[bytes]:
        """The box's crop as the embedder sees it (`visearch.embedding.crop_box`: the box plus a
        10% margin per side, squared by padding with the image's mean colour), as JPEG."""
        data = catalog.annotation_crop(db, annotation_id, size=size, max_pixels=settings.max_image_pixels,
                                       media_roots=settings.media_roots)
        return Response(data, media_type="image/jpeg", headers=_CACHE)
