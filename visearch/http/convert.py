"""Service dataclasses -> response Structs (and the links clients follow).

Fields are copied by name (``msgspec.convert(..., from_attributes=True)``): a Struct declares
the shape once and the service dataclass or SQL row it is filled from has the same names; only
the links clients follow are added here.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import dataclasses

import msgspec

from visearch.admin import DatasetInfo
from visearch.catalog import DatasetStatus, ImageDetail, UploadedImage
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
    return msgspec.convert(d, s.DatasetOut, from_attributes=True)


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
    # rows of sql/status/*.sql by column name; columns a Struct does not declare are ignored
    # (strict=False: numeric ETAs arrive as Decimal)
    return s.DatasetStatusOut(
        dataset=dataset(st.dataset),
        models=msgspec.convert([{**r, "index_missing": r.get("index_missing") or []} for r in st.models],
                               list[s.ModelStatusOut], strict=False),
        failures=msgspec.convert(st.failures, list[s.FailureOut], strict=False),
        workers=msgspec.convert(st.workers, list[s.WorkerOut], strict=False),
        job=job(state),
    )


def uploaded(u: UploadedImage) -> s.UploadOut:
    return msgspec.convert({**dataclasses.asdict(u), "image_url": image_url(u.id)}, s.UploadOut)


def image(d: ImageDetail) -> s.ImageOut:
    return msgspec.convert(
        {**dataclasses.asdict(d), "original_url": image_url(d.id), "thumbnail_url": thumbnail_url(d.id)},
        s.ImageOut, strict=False,
    )
