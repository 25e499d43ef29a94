"""``/v1/images`` and ``/v1/annotations``: image details, original bytes, thumbnails, crops."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, get
from litestar.params import Parameter

from visearch import catalog
from visearch.http import convert
from visearch.http.deps import DB, AppSettings, Reads
from visearch.http.errors import error_responses
from visearch.http.schemas import MAX_ID, ImageOut

ImageId = Annotated[int, Parameter(ge=1, le=MAX_ID, description="image id")]
AnnotationId = Annotated[int, Parameter(ge=1, le=MAX_ID, description="annotation (box) id")]
_CACHE = {"Cache-Control": "private, max-age=3600"}


class ImageController(Controller):
    path = "/v1/images"
    tags = ["images"]

    @get("/{image_id:int}", sync_to_thread=True, summary="An image's details", responses=error_responses(400, 401, 404))
    def get_image(self, db: DB, image_id: ImageId) -> ImageOut:
        """Dataset, size in pixels (as displayed), format, file name, metadata, its boxes (COCO
        [x, y, w, h] pixels) and labels."""
        return convert.image(catalog.get_image(db, image_id))

    @get("/{image_id:int}/original", sync_to_thread=True, summary="The original file",
         media_type="application/octet-stream", responses=error_responses(400, 401, 404))
    def original(self, db: DB, image_id: ImageId) -> Response[bytes]:
        """The image file byte for byte, with its own Content-Type (image/jpeg, image/png, ...).
        404 also when it was ingested by reference and the file is gone."""
        data, fmt = catalog.image_original(db, image_id)
        return Response(data, media_type=catalog.mime_type(fmt), headers=_CACHE)

    @get("/{image_id:int}/thumbnail", sync_to_thread=True, summary="A JPEG thumbnail",
         media_type="image/jpeg", responses=error_responses(400, 401, 404, 422))
    def thumbnail(
        self, request: Request, reads: Reads, settings: AppSettings, image_id: ImageId,
        size: Annotated[int, Parameter(ge=catalog.MIN_THUMBNAIL, le=catalog.MAX_THUMBNAIL,
                                       description="longest side in pixels (never enlarged)")] = 256,
    ) -> Response[bytes]:
        """The image as displayed (EXIF orientation applied), scaled to fit `size` x `size`
        pixels with its aspect ratio kept, as JPEG."""
        data = reads.run(lambda d: catalog.image_thumbnail(d, image_id, size, max_pixels=settings.max_image_pixels),
                         owner=request.user)
        return Response(data, media_type="image/jpeg", headers=_CACHE)


class AnnotationController(Controller):
    path = "/v1/annotations"
    tags = ["images"]

    @get("/{annotation_id:int}/crop", sync_to_thread=True, summary="The crop of a box",
         media_type="image/jpeg", responses=error_responses(400, 401, 404, 422))
    def crop(
        self, db: DB, settings: AppSettings, annotation_id: AnnotationId,
        size: Annotated[int | None, Parameter(ge=catalog.MIN_THUMBNAIL, le=catalog.MAX_THUMBNAIL,
                                              description="scale to at most this longest side, pixels")] = None,
    ) -> Response[bytes]:
        """The box's crop as the embedder sees it (`visearch.embedding.crop_box`: the box plus a
        10% margin per side, squared by padding with the image's mean colour), as JPEG."""
        data = catalog.annotation_crop(db, annotation_id, size=size, max_pixels=settings.max_image_pixels)
        return Response(data, media_type="image/jpeg", headers=_CACHE)
