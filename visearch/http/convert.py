"""Service dataclasses -> response Structs (and the links clients follow).

Fields are copied by name (``msgspec.convert(..., from_attributes=True)``): a Struct declares
the shape once and the service dataclass or SQL row it is filled from has the same names; only
the links clients follow are added here.
"""

from __future__ import annotations

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
    links = {
        "image_url": image_url(i.image_id), "thumbnail_url": thumbnail_url(i.image_id),
        "crop_url": crop_url(i.annotation_id) if i.annotation_id is not None else None,
    }
    return msgspec.convert({**dataclasses.asdict(i), **links}, s.ResultItem)


def histogram(h: Any) -> s.ScoreHistogramOut | None:
    """From a :class:`ScoreHistogram` or its stored JSON (keys the Struct lacks are ignored)."""
    return None if h is None else msgspec.convert(h, s.ScoreHistogramOut, from_attributes=True)


def coverage(c: Any) -> s.CoverageOut | None:
    """From :class:`visearch.search.serving.Coverage`."""
    return None if c is None else msgspec.convert(c, s.CoverageOut, from_attributes=True)


def collection(c: Collection) -> s.CollectionOut:
    stored = dict(c.query or {})
    uploaded = stored.pop("uploaded_image", None)
    try:
        query = msgspec.convert(stored, s.SearchBody)
    except msgspec.ValidationError:  # written by another client: show what can be shown
        query = s.SearchBody()
    return msgspec.convert({
        **dataclasses.asdict(c), "query": query,
        "uploaded_image": msgspec.convert(uploaded, s.UploadedQueryImage) if uploaded else None,
    }, s.CollectionOut)


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


def job(state: EmbedJobState) -> s.EmbedJobOut:
    return msgspec.convert(state, s.EmbedJobOut, from_attributes=True)


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
