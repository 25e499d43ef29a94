"""Images as the HTTP API serves them (SQL in ``sql/catalog/``).

Add an uploaded image to a dataset; read an image's original bytes, a JPEG thumbnail, or the
crop of a box; a dataset's embedding status. Writes go through the ingest writer helpers
(:mod:`visearch.ingest.writer`), so an uploaded image is stored exactly like an ingested one
and the database triggers queue it for embedding.

Datasets and models themselves (create, list, enable/disable, queue counts) live in
:mod:`visearch.admin`, the one admin module the CLI and the HTTP API share.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from PIL import Image
from psycopg.rows import class_row

from visearch.db.database import Database
from visearch.embedding.crops import CropSpec, crop_box
from visearch.admin import DatasetInfo, check_dataset, get_dataset
from visearch.embedding.decode import DEFAULT_MAX_PIXELS, decode_image, probe_image
from visearch.errors import InvalidRequestError, NotFoundError
from visearch.media import media_roots as media_roots_in_force
from visearch.media import resolve_media_path
from visearch.ingest.writer import NewImage, ensure_concepts, insert_images, insert_labels
from visearch.resources import read_sql

#: ``image_labels.source`` of labels given with an upload.
UPLOAD_LABEL_SOURCE = "manual"
#: Thumbnail and crop sizes accepted (longest side, pixels).
MIN_THUMBNAIL, MAX_THUMBNAIL = 16, 1024
JPEG_QUALITY = 85
#: Decodes of more pixels than this (after JPEG draft scaling) run at most
#: LARGE_DECODE_SLOTS at a time (decode_bounded).
LARGE_DECODE_PIXELS = 16_000_000
LARGE_DECODE_SLOTS = 2
_LARGE_DECODES = threading.BoundedSemaphore(LARGE_DECODE_SLOTS)
#: Memory for cached thumbnails (a 256-pixel JPEG is ~10-20 kB).
THUMBNAIL_CACHE_BYTES = 64 * 1024 * 1024
#: Most labels one upload may give its image (one upload once created 20,000).
MAX_LABELS_PER_UPLOAD = 100


@dataclass
class DatasetStatus:
    """A dataset and its embedding status, as ``visearch status`` reports it (rows as dicts,
    columns as in ``sql/status/{datasets,failures,workers}.sql``)."""

    dataset: DatasetInfo
    models: list[dict[str, Any]]  # per model: items, embedded, stale, failed, covered, rate, ETA
    failures: list[dict[str, Any]]  # failed or retrying items grouped by model, kind and reason
    workers: list[dict[str, Any]]  # every embedding worker (not only this dataset's)


@dataclass
class UploadedImage:
    id: int
    dataset_id: int
    created: bool  # False: the dataset already had these bytes (this is that image)
    width: int
    height: int
    format: str
    sha256: str
    labels_added: int


@dataclass
class ImageDetail:
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
    annotations: list[dict[str, Any]]
    labels: list[dict[str, Any]]


# ---- datasets ---------------------------------------------------------------------------------

def dataset_status(db: Database, dataset_id: int) -> DatasetStatus:
    """Embedding status of a dataset: :func:`visearch.status.status_of_datasets` (what
    ``visearch status -d NAME`` shows).

    Raises: NotFoundError.
    """
    from visearch.status import status_of_datasets

    info = get_dataset(db, dataset_id)
    report = status_of_datasets(db, [dataset_id])
    return DatasetStatus(info, report.datasets, report.failures, report.workers)


# ---- images -----------------------------------------------------------------------------------

def upload_image(
    db: Database,
    dataset_id: int,
    data: bytes,
    *,
    file_name: str | None = None,
    metadata: dict[str, Any] | None = None,
    labels: Sequence[str] = (),
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> UploadedImage:
    """Add one image (its encoded bytes) to a dataset, stored like an ingested file.

    The bytes are fully decoded first (corrupt, truncated, unsupported or oversized files are
    refused); the row records the displayed (post-EXIF) size and Pillow's format name, and the
    original bytes go into ``image_content``. Bytes the dataset already has are not stored
    twice: the existing image is returned with ``created=False``. ``labels`` are concept names
    (created if new) given to the image with source ``'manual'``.

    Raises:
        NotFoundError: unknown dataset.
        InvalidRequestError: more than :data:`MAX_LABELS_PER_UPLOAD` distinct labels.
        ImageDecodeError: not an image, corrupt, truncated, or more than ``max_pixels`` pixels.
    """
    if len({n.strip() for n in labels if n and n.strip()}) > MAX_LABELS_PER_UPLOAD:
        raise InvalidRequestError(f"an upload may give at most {MAX_LABELS_PER_UPLOAD} labels")
    with db.pooled() as conn:
        check_dataset(conn, dataset_id)  # 404 before any decoding work
    info = probe_image(data, max_pixels=max_pixels)
    decode_image(data, max_pixels=max_pixels).close()  # a full decode catches truncated files
    digest = hashlib.sha256(data).digest()
    with db.pooled() as conn:
        row = NewImage(
            sha256=digest, width=info.width, height=info.height, format=info.format, source_uri=None,
            file_name=file_name, external_id=None, metadata=metadata or {}, data=data,
        )
        refs, added = insert_images(conn, dataset_id, [row], store_bytes=True)
        ref = refs[digest]
        labels_added = 0
        if labels:
            ids, _ = ensure_concepts(conn, labels)
            pairs = [(ref.id, cid) for cid in dict.fromkeys(ids[n] for n in labels if n and n.strip())]
            labels_added = insert_labels(conn, pairs, source=UPLOAD_LABEL_SOURCE)
    return UploadedImage(
        id=ref.id, dataset_id=dataset_id, created=digest in added, width=ref.width, height=ref.height,
        format=info.format, sha256=digest.hex(), labels_added=labels_added,
    )


def get_image(db: Database, image_id: int) -> ImageDetail:
    """Raises: NotFoundError."""
    with db.pooled() as conn, conn.cursor(row_factory=class_row(ImageDetail)) as cur:
        detail = cur.execute(read_sql("catalog/image_detail.sql"), {"image_id": image_id}).fetchone()
    if detail is None:
        raise NotFoundError(f"unknown image id {image_id}")
    return detail


def image_original(db: Database, image_id: int, *, media_roots: Sequence[Path] = ()) -> tuple[bytes, str]:
    """The original file bytes of an image and its format (Pillow's name, e.g. ``"JPEG"``).

    An image ingested by reference is read from its file only inside the media roots
    (:mod:`visearch.media`): ``media_roots`` (``Settings.media_roots``) or, when empty, the
    folders ingested from.

    Raises:
        NotFoundError: unknown image, or ingested by reference and the file is gone.
        ForbiddenError: ingested by reference and the file is outside the media roots.
    """
    return _original(db, image_id, media_roots)[:2]


def _original(db: Database, image_id: int, media_roots: Sequence[Path]) -> tuple[bytes, str, str]:
    """(bytes, format, sha256 hex) of an image; see :func:`image_original`."""
    with db.pooled() as conn:
        row = conn.execute(read_sql("catalog/image_source.sql"), {"image_id": image_id}).fetchone()
        if row is None:
            raise NotFoundError(f"unknown image id {image_id}")
        _id, fmt, _w, _h, uri, content, sha = row
        if content is not None:
            return bytes(content), fmt, sha
        roots = media_roots_in_force(conn, media_roots)
    try:
        return resolve_media_path(uri or "", roots).read_bytes(), fmt, sha
    except OSError as exc:
        raise NotFoundError(
            f"image {image_id} was ingested by reference and its file is not readable ({uri}): {exc}"
        ) from exc


def mime_type(fmt: str) -> str:
    """Content type of a Pillow format name (``"JPEG"`` -> ``image/jpeg``)."""
    return Image.MIME.get((fmt or "").upper(), "application/octet-stream")


def _jpeg(image: Image.Image, size: int | None) -> bytes:
    if size is not None:
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    if image.mode != "RGB":
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def _check_size(size: int | None) -> None:
    if size is not None and not MIN_THUMBNAIL <= size <= MAX_THUMBNAIL:
        raise InvalidRequestError(f"size must be in [{MIN_THUMBNAIL}, {MAX_THUMBNAIL}] pixels, not {size}")


@dataclass
class Thumbnail:
    """A thumbnail and its entity tag (``"<image sha256>-<size>"``); ``data`` is None when the
    client's ``If-None-Match`` already names that tag (HTTP 304)."""

    etag: str
    data: bytes | None


def decode_bounded(data: bytes, *, max_pixels: int, fit: int | None = None) -> Image.Image:
    """:func:`decode_image` with memory bounded for serving.

    With ``fit``, the image is scaled to fit ``fit`` x ``fit`` pixels (aspect kept, never
    enlarged) and JPEGs decode already scaled by 1/2 to 1/8 (``Image.draft``). A decode of more
    than :data:`LARGE_DECODE_PIXELS` pixels (after draft scaling) holds one of
    :data:`LARGE_DECODE_SLOTS` slots until the image is scaled down, so a burst of huge PNGs
    (each ~3-4 bytes per pixel while decoded: 250 MB for 8000x8000) costs a few of them at a
    time, not all at once.

    Raises:
        ImageDecodeError: as :func:`decode_image` (over ``max_pixels``: ``too_large``).
    """
    # The header alone: probe_image() reads EXIF, for which Pillow decodes a whole PNG.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                (width, height), fmt = header.size, header.format
        pixels = width * height
        if fmt == "JPEG" and fit is not None:
            scale = max(1, min(8, min(width, height) // max(fit, 1)))
            pixels //= scale * scale
    except Exception:  # noqa: BLE001 -- decode_image (in a slot) raises the proper ImageDecodeError
        pixels = LARGE_DECODE_PIXELS + 1

    def decode() -> Image.Image:
        image = decode_image(data, max_pixels=max_pixels, draft=fit)
        if fit is not None:
            image.thumbnail((fit, fit), Image.Resampling.LANCZOS)
        return image

    if pixels <= LARGE_DECODE_PIXELS:
        return decode()
    with _LARGE_DECODES:
        return decode()


def return_freed_memory_to_the_os() -> bool:
    """Make glibc return the memory of freed large images to the OS at once (``mallopt``).

    Pillow allocates decoded pixels in 16 MB blocks; glibc's adaptive mmap threshold soon
    serves such blocks from per-thread heaps instead, which keep the memory after it is freed:
    8 server threads that each decoded one 8000x8000 image once stayed at ~1.3 GB resident. A
    fixed 1 MB threshold (``M_MMAP_THRESHOLD``) keeps every block of 1 MB or more on its own
    mapping, unmapped when freed, and ``M_ARENA_MAX`` = 4 bounds the heaps. Called by
    ``visearch serve`` (process-wide; a no-op returning False where glibc is absent).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold, m_arena_max = -3, -8
        return bool(libc.mallopt(m_mmap_threshold, 1 << 20)) and bool(libc.mallopt(m_arena_max, 4))
    except (OSError, AttributeError):
        return False


def _etag(sha256_hex: str, size: int) -> str:
    return f'"{sha256_hex}-{size}"'


def image_thumbnail(
    db: Database, image_id: int, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS,
    media_roots: Sequence[Path] = (), if_none_match: str | None = None,
) -> Thumbnail:
    """A JPEG of the image (as displayed, EXIF orientation applied) whose longest side is at
    most ``size`` pixels (never enlarged), aspect ratio kept.

    Thumbnails are kept in a process-wide cache of :data:`THUMBNAIL_CACHE_BYTES` (least recently
    used out first), keyed by the image's sha256 and ``size``, so a changed image never gets a
    stale thumbnail; the decode is bounded by :func:`decode_bounded`. ``if_none_match`` (the
    request's header) naming the current tag answers without reading or decoding anything.

    Raises:
        NotFoundError: unknown image or its file is gone. InvalidRequestError: size out of range.
        ForbiddenError: a reference-only image outside the media roots.
        ImageDecodeError: the stored file does not decode (any more).
    """
    _check_size(size)
    with db.pooled() as conn:
        row = conn.execute("SELECT encode(sha256, 'hex') FROM images WHERE id = %s", (image_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"unknown image id {image_id}")
    etag = _etag(row[0], size)
    if if_none_match and etag in [t.strip() for t in if_none_match.split(",")] + ["*"]:
        return Thumbnail(etag, None)
    cached = _THUMBNAILS.get((row[0], size))
    if cached is not None:
        return Thumbnail(etag, cached)
    data, _fmt, sha = _original(db, image_id, media_roots)
    jpeg = _jpeg(decode_bounded(data, max_pixels=max_pixels, fit=size), size)
    _THUMBNAILS.put((sha, size), jpeg)
    return Thumbnail(_etag(sha, size), jpeg)


class _ByteLRU:
    """A thread-safe LRU of bytes values bounded by their total size."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes += len(value) - (len(old) if old is not None else 0)
            self._items[key] = value
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)


_THUMBNAILS = _ByteLRU(THUMBNAIL_CACHE_BYTES)


def annotation_crop(
    db: Database,
    annotation_id: int,
    *,
    size: int | None = None,
    spec: CropSpec = CropSpec(),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    media_roots: Sequence[Path] = (),
) -> bytes:
    """A JPEG of a box's crop, framed exactly as the embedder frames it
    (:func:`visearch.embedding.crop_box`: context margin, squared by padding with the mean
    colour), scaled down to at most ``size`` pixels on its longest side if given.

    Raises:
        NotFoundError: unknown annotation, or its image's file is gone.
        InvalidRequestError: size out of range. InvalidBoxError: the box does not fit the image.
    """
    _check_size(size)
    with db.pooled() as conn:
        row = conn.execute(
            "SELECT image_id, bbox_x, bbox_y, bbox_w, bbox_h FROM annotations WHERE id = %s", (annotation_id,)
        ).fetchone()
    if row is None:
        raise NotFoundError(f"unknown annotation id {annotation_id}")
    data, _ = image_original(db, row[0], media_roots=media_roots)
    image = decode_bounded(data, max_pixels=max_pixels)
    return _jpeg(crop_box(image, row[1:], spec), size)
