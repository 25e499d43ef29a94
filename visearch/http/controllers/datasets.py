"""``/v1/datasets``: create, list, enable/disable AI search, embedding status, embed, upload."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.exceptions import ValidationException
from litestar.params import JSONBody, MultipartBody

from visearch import admin, catalog
from visearch.errors import InvalidRequestError
from visearch.http.controllers.housekeeping import DatasetDeletedOut, RenameBody
from visearch.http.controllers.search import image_url
from visearch.http.deps import DB, AppSettings, Jobs, Reads
from visearch.http.errors import error_responses
from visearch.http.jobs import EmbedJobState
from visearch.http.schemas import (
    DatasetBody,
    DatasetId,
    DatasetOut,
    DatasetStatusOut,
    EmbedJobOut,
    EmbedTriggerOut,
    FailureOut,
    ModelStatusOut,
    UploadForm,
    UploadOut,
    WorkerOut,
)


def _dataset(d: admin.DatasetInfo) -> DatasetOut:
    return msgspec.convert(d, DatasetOut, from_attributes=True)


def _job(state: EmbedJobState) -> EmbedJobOut:
    return msgspec.convert(state, EmbedJobOut, from_attributes=True)


def _status(st: catalog.DatasetStatus, state: EmbedJobState) -> DatasetStatusOut:
    # rows of sql/status/*.sql by column name; columns a Struct does not declare are ignored
    # (strict=False: numeric ETAs arrive as Decimal)
    return DatasetStatusOut(
        dataset=_dataset(st.dataset),
        models=msgspec.convert([{**r, "index_missing": r.get("index_missing") or []} for r in st.models],
                               list[ModelStatusOut], strict=False),
        failures=msgspec.convert(st.failures, list[FailureOut], strict=False),
        workers=msgspec.convert(st.workers, list[WorkerOut], strict=False),
        job=_job(state),
    )


def _metadata(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    def no_constants(name: str):
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(text, parse_constant=no_constants)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise ValidationException(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValidationException("metadata must be a JSON object")
    return value


class DatasetController(Controller):
    path = "/v1/datasets"
    tags = ["datasets"]

    @post(sync_to_thread=True, summary="Create a dataset", responses=error_responses(400, 401, 409))
    def create(self, db: DB, data: JSONBody[DatasetBody]) -> DatasetOut:
        """Create an empty dataset (AI search enabled). 201; 409 if the name is taken."""
        return _dataset(admin.create_dataset(db, data.name, description=data.description,
                                             metadata=data.metadata))

    @get(sync_to_thread=True, summary="List datasets", responses=error_responses(401))
    def list_datasets(self, db: DB) -> list[DatasetOut]:
        """Every dataset with its numbers of images and annotations (boxes)."""
        return [_dataset(d) for d in admin.list_datasets(db)]

    @get("/{dataset_id:int}", sync_to_thread=True, summary="A dataset", responses=error_responses(400, 401, 404))
    def get_dataset(self, db: DB, dataset_id: DatasetId) -> DatasetOut:
        return _dataset(admin.get_dataset(db, dataset_id))

    @post("/{dataset_id:int}/enable", sync_to_thread=True, status_code=200, summary="Enable AI search",
          opt={"role": "admin"},
          responses=error_responses(400, 401, 404))
    def enable(self, db: DB, dataset_id: DatasetId) -> DatasetOut:
        """Include the dataset in search and in automatic embedding again (its vectors were
        kept; items changed meanwhile are queued)."""
        return _dataset(admin.set_search_enabled(db, dataset_id, True)[0])

    @post("/{dataset_id:int}/disable", sync_to_thread=True, status_code=200, summary="Disable AI search",
          opt={"role": "admin"},
          responses=error_responses(400, 401, 404))
    def disable(self, db: DB, dataset_id: DatasetId) -> DatasetOut:
        """Leave the dataset out of search and of automatic embedding; its vectors are kept.
        Searches naming it answer 422."""
        return _dataset(admin.set_search_enabled(db, dataset_id, False)[0])

    @get("/{dataset_id:int}/status", sync_to_thread=True, summary="Embedding status",
         responses=error_responses(400, 401, 404))
    def status(self, request: Request, reads: Reads, jobs: Jobs, dataset_id: DatasetId) -> DatasetStatusOut:
        """Per registered model: images and boxes embedded, queued (new or changed), in progress,
        failed (given up on, with the last errors); and this server's background embedding job
        (see `POST /v1/datasets/{id}/embed`)."""
        status = reads.run(lambda d: catalog.dataset_status(d, dataset_id), owner=request.user)
        return _status(status, jobs.state())

    @post("/{dataset_id:int}/embed", sync_to_thread=True, status_code=202, summary="Embed what is queued",
          responses=error_responses(400, 401, 404, 422))
    def embed(self, db: DB, jobs: Jobs, dataset_id: DatasetId) -> EmbedTriggerOut:
        """Get the dataset's queued images and boxes embedded now, and return at once (202).

        If `visearch worker` processes are alive, they are notified (they embed every active
        model's queue at once). Otherwise this server runs the embedding job itself (the same
        job as `visearch embed -d NAME`) in a background thread; a trigger while it runs is
        merged into it. Follow the progress with `GET /v1/datasets/{id}/status`. 422 if AI
        search is disabled for the dataset."""
        info = admin.get_dataset(db, dataset_id)
        if not info.search_enabled:
            raise InvalidRequestError(f"AI search is disabled for dataset {info.name!r}; enable it first")
        queued = admin.queued_items(db, dataset_id)
        if admin.live_workers(db):
            admin.notify_workers(db)
            return EmbedTriggerOut(dataset_id=dataset_id, queued=queued, handled_by="workers",
                                   job=_job(jobs.state()))
        state = jobs.trigger(dataset_id)
        return EmbedTriggerOut(dataset_id=dataset_id, queued=queued, handled_by="server", job=_job(state))

    @post("/{dataset_id:int}/images", sync_to_thread=True, status_code=201, summary="Upload an image",
          responses=error_responses(400, 401, 404, 413, 415, 422))
    def upload(
        self, db: DB, settings: AppSettings, dataset_id: DatasetId,
        data: MultipartBody[UploadForm],
    ) -> UploadOut:
        """Add an image to the dataset (multipart: part `file`; optional parts `metadata` (a
        JSON object), `labels` (comma-separated concept names) and `file_name`). It is fully
        decoded first and stored like an ingested file (original bytes, displayed size); the
        database queues it for embedding. Bytes the dataset already has are not stored twice:
        that image is returned with `created: false`. 413 over the body limit or the pixel
        limit; 415 not an image; 422 truncated or corrupt."""
        content = data.file.file.read()
        labels = [x.strip() for x in (data.labels or "").split(",") if x.strip()]
        u = catalog.upload_image(
            db, dataset_id, content, file_name=data.file_name or data.file.filename or None,
            metadata=_metadata(data.metadata), labels=labels, max_pixels=settings.max_image_pixels,
        )
        return msgspec.convert({**dataclasses.asdict(u), "image_url": image_url(u.id)}, UploadOut)

    # ---- housekeeping (visearch.housekeeping; admin role) ----

    @patch("/{dataset_id:int}", sync_to_thread=True, summary="Rename a dataset", opt={"role": "admin"},
           responses=error_responses(400, 401, 404, 409))
    def rename(self, db: DB, dataset_id: DatasetId, data: JSONBody[RenameBody]) -> DatasetOut:
        """Give the dataset a new name (`{"name": ...}`). 409 if another dataset has it."""
        admin.rename_dataset(db, dataset_id, data.name)
        return _dataset(admin.get_dataset(db, dataset_id))

    @delete("/{dataset_id:int}", sync_to_thread=True, status_code=200, summary="Delete a dataset",
            opt={"role": "admin"}, responses=error_responses(400, 401, 404))
    def delete_dataset(self, db: DB, dataset_id: DatasetId) -> DatasetDeletedOut:
        """Delete the dataset with its images (and bytes, labels, captions, boxes), every model's
        vectors of them and its embedding queue rows, in one transaction; collections keep their
        other items. Returns what was removed. Cannot be undone."""
        d = admin.delete_dataset(db, dataset_id)
        return DatasetDeletedOut(dataset_id=d.dataset_id, name=d.name, images=d.images,
                                 annotations=d.annotations, vectors=d.vectors, queue_rows=d.queue_rows,
                                 collection_items=d.collection_items)
