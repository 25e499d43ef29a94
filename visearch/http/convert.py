"""Service dataclasses -> response Structs (and the links clients follow)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec

from visearch.catalog import DatasetInfo, DatasetStatus, ImageDetail, UploadedImage
from visearch.collections import Collection, CollectionItem
from visearch.http import schemas as s
from visearch.http.jobs import EmbedJobState

THUMBNAIL_SIZE = 256


def image_url(image_id: int) -> str:
    return f"/v1/images/{image_id}/original"


def thumbnail_url(image_id: int, size: int = THUMBNAIL_SIZE) -> str:
    return f"/v1/images/{image_id}/thumbnail?size={size}"


def crop_url(annotation_id: int) -> str:
    return f"/v1/annotations/{annotation_id}/crop"


def page_url(collection_id: int, offset: int, limit: int) -> str:
    return f"/v1/collections/{collection_id}?offset={offset}&limit={limit}"


def item(i: CollectionItem) -> s.ResultItem:
    return s.ResultItem(
        rank=i.rank, score=i.score, image_id=i.image_id, annotation_id=i.annotation_id,
        dataset=i.dataset, file_name=i.file_name, width=i.width, height=i.height,
        external_id=i.external_id, bbox_xywh=list(i.bbox_xywh) if i.bbox_xywh else None,
        concept=i.concept, iscrowd=i.iscrowd, image_url=image_url(i.image_id),
        thumbnail_url=thumbnail_url(i.image_id),
        crop_url=crop_url(i.annotation_id) if i.annotation_id is not None else None,
    )


def histogram(h: Any) -> s.ScoreHistogramOut | None:
    """From a :class:`ScoreHistogram` or its stored JSON."""
    if h is None:
        return None
    data = h if isinstance(h, dict) else {k: getattr(h, k) for k in
                                         ("bins", "lo", "hi", "edges", "counts", "considered", "sampled")}
    return msgspec.convert({k: v for k, v in data.items() if k != "range"}, s.ScoreHistogramOut)


def coverage(c: Any) -> s.CoverageOut | None:
    """From :class:`visearch.search.serving.Coverage`."""
    if c is None:
        return None
    return s.CoverageOut(kind=c.kind, total=c.total, ready=c.ready, queued=c.queued, failed=c.failed,
                         unqueued=c.unqueued)


def collection(c: Collection) -> s.CollectionOut:
    stored = dict(c.query or {})
    uploaded = stored.pop("uploaded_image", None)
    try:
        query = msgspec.convert(stored, s.SearchBody)
    except msgspec.ValidationError:  # written by another client: show what can be shown
        query = s.SearchBody()
    return s.CollectionOut(
        id=c.id, name=c.name, saved=c.saved, mode=c.mode, model=c.model, query=query,
        uploaded_image=msgspec.convert(uploaded, s.UploadedQueryImage) if uploaded else None,
        exact=c.exact, candidates=c.candidates, note=c.note, items=c.items, images=c.images,
        created_at=c.created_at, saved_at=c.saved_at,
    )


def next_page(collection_id: int, offset: int, limit: int, returned: int, total: int) -> tuple[int | None, str | None]:
    nxt = offset + returned
    if returned < limit or nxt >= total:
        return None, None
    return nxt, page_url(collection_id, nxt, limit)


def collection_page(c: Collection, items: list[CollectionItem], offset: int, limit: int) -> s.CollectionPage:
    nxt, url = next_page(c.id, offset, limit, len(items), c.items)
    return s.CollectionPage(
        collection=collection(c), offset=offset, limit=limit, total=c.items,
        items=[item(i) for i in items], next_offset=nxt, next_url=url, histogram=histogram(c.histogram),
    )


def dataset(d: DatasetInfo) -> s.DatasetOut:
    return s.DatasetOut(
        id=d.id, name=d.name, description=d.description, search_enabled=d.search_enabled,
        metadata=d.metadata, created_at=d.created_at, images=d.images, annotations=d.annotations,
    )


def _time(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, tz=timezone.utc) if t is not None else None


def job(state: EmbedJobState) -> s.EmbedJobOut:
    return s.EmbedJobOut(
        running=state.running, pending_datasets=state.pending_datasets,
        current_datasets=state.current_datasets, model=state.model,
        started_at=_time(state.started_at), finished_at=_time(state.finished_at),
        last_summary=state.last_summary, last_error=state.last_error, embedded_total=state.embedded_total,
    )


def dataset_status(st: DatasetStatus, state: EmbedJobState) -> s.DatasetStatusOut:
    models = [{k: v for k, v in row.items() if k in _MODEL_FIELDS} for row in st.models]
    return s.DatasetStatusOut(
        dataset=dataset(st.dataset),
        models=msgspec.convert(models, list[s.ModelStatusOut], from_attributes=False, strict=False),
        failures=msgspec.convert(
            [{k: v for k, v in row.items() if k in _FAILURE_FIELDS} for row in st.failures],
            list[s.FailureOut], strict=False),
        workers=msgspec.convert(
            [{k: v for k, v in row.items() if k in _WORKER_FIELDS} for row in st.workers],
            list[s.WorkerOut], strict=False),
        job=job(state),
    )


_MODEL_FIELDS = set(s.ModelStatusOut.__struct_fields__)
_FAILURE_FIELDS = set(s.FailureOut.__struct_fields__)
_WORKER_FIELDS = set(s.WorkerOut.__struct_fields__)


def uploaded(u: UploadedImage) -> s.UploadOut:
    return s.UploadOut(
        id=u.id, dataset_id=u.dataset_id, created=u.created, width=u.width, height=u.height,
        format=u.format, sha256=u.sha256, labels_added=u.labels_added, image_url=image_url(u.id),
    )


def image(d: ImageDetail) -> s.ImageOut:
    return s.ImageOut(
        id=d.id, dataset_id=d.dataset_id, dataset=d.dataset, width=d.width, height=d.height,
        format=d.format, file_name=d.file_name, source_uri=d.source_uri, external_id=d.external_id,
        metadata=d.metadata, created_at=d.created_at, sha256=d.sha256, has_bytes=d.has_bytes,
        annotations=[msgspec.convert(a, s.AnnotationOut) for a in d.annotations],
        labels=[msgspec.convert(lb, s.LabelOut) for lb in d.labels],
        original_url=image_url(d.id), thumbnail_url=thumbnail_url(d.id),
    )
