"""Housekeeping a person expects (SQL in ``sql/housekeeping/``): delete images, find an image
by file name or external id, concept autocomplete, captions. (Renaming and deleting a dataset
are dataset administration: :mod:`visearch.admin`.)

The HTTP API (``/v1/images`` GET and ``/v1/images/delete``, ``/v1/concepts``), the web console
and the CLI (``visearch image find|delete``) call these functions. Deleting relies on the
schema's cascades: an image's bytes, labels, captions, boxes, every model's vectors and its
embedding queue rows go with it (``ON DELETE CASCADE`` and the dequeue triggers of 0001).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from psycopg.rows import class_row

from visearch.db.database import Database
from visearch.errors import InvalidRequestError, NotFoundError
from visearch.resources import read_sql


@dataclass
class ImageMatch:
    """An image found by :func:`find_images`."""

    id: int
    dataset_id: int
    dataset: str
    file_name: str | None
    external_id: str | None
    width: int  # pixels, as displayed
    height: int
    source_uri: str | None
    created_at: datetime


@dataclass
class ConceptMatch:
    """A concept for ``#tag`` autocomplete."""

    id: int
    name: str  # as stored, e.g. "traffic light"
    tag: str  # what `#tag` matches, e.g. "traffic_light"
    images: int  # images labelled with it (image_labels)
    boxes: int  # annotations of it


@dataclass
class Caption:
    id: int
    text: str
    source: str  # 'coco', 'manual', a model name, ...


def image_captions(db: Database, image_id: int) -> list[Caption]:
    """An image's captions, oldest first.

    Raises:
        NotFoundError: unknown image.
    """
    with db.pooled() as conn, conn.cursor(row_factory=class_row(Caption)) as cur:
        rows = cur.execute(read_sql("housekeeping/image_captions.sql"), {"image_id": image_id}).fetchall()
    if not rows:
        raise NotFoundError(f"unknown image id {image_id}")
    return [c for c in rows if c.id is not None]  # an image without captions: one row of NULLs


def delete_images(db: Database, image_ids: Sequence[int]) -> list[int]:
    """Delete images by id, with their bytes, labels, captions, boxes, vectors and queue rows.
    Returns the ids that existed and were deleted (unknown ids are ignored), ascending.

    Raises:
        InvalidRequestError: no ids.
    """
    ids = sorted({int(i) for i in image_ids})
    if not ids:
        raise InvalidRequestError("give at least one image id to delete")
    with db.pooled() as conn:
        return sorted(r[0] for r in conn.execute(read_sql("housekeeping/delete_images.sql"), {"image_ids": ids}))


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def find_images(
    db: Database, term: str, *, prefix: bool = False, dataset_id: int | None = None, limit: int = 50
) -> list[ImageMatch]:
    """Images whose file name or external id (e.g. the COCO image id ``"9"``) equals ``term``,
    or starts with it when ``prefix``; exact matches first. Every dataset unless ``dataset_id``.
    Index scans on ``images_file_name_pattern`` / ``images_external_id_pattern`` (0010).

    Raises:
        InvalidRequestError: empty term, or limit outside [1, 1000].
    """
    term = (term or "").strip()
    if not term:
        raise InvalidRequestError("give a file name or an external id to look for")
    if not 1 <= limit <= 1000:
        raise InvalidRequestError(f"limit must be in [1, 1000], not {limit}")
    with db.pooled() as conn, conn.cursor(row_factory=class_row(ImageMatch)) as cur:
        return cur.execute(read_sql("housekeeping/find_images.sql"), {
            "term": term, "pattern": _like_prefix(term), "prefix": prefix, "dataset_id": dataset_id,
            "limit": limit,
        }).fetchall()


def concepts_by_prefix(db: Database, prefix: str, *, limit: int = 20) -> list[ConceptMatch]:
    """Concepts whose tag starts with ``prefix`` (a leading ``#`` or ``-#`` is ignored, the rest
    is turned into a tag: ``"Traffic l"`` -> ``traffic_l``), most used first; ``""``: the most
    used concepts.

    Raises:
        InvalidRequestError: limit outside [1, 200].
    """
    if not 1 <= limit <= 200:
        raise InvalidRequestError(f"limit must be in [1, 200], not {limit}")
    text = (prefix or "").strip().lstrip("-").lstrip("#")
    with db.pooled() as conn:
        # the tag rule lives in SQL only (concept_tag(), sql/schema/0001_core.sql)
        tag = conn.execute("SELECT concept_tag(%s)", (text,)).fetchone()[0] if text else ""
        with conn.cursor(row_factory=class_row(ConceptMatch)) as cur:
            return cur.execute(read_sql("housekeeping/concepts_by_prefix.sql"),
                               {"pattern": _like_prefix(tag), "limit": limit}).fetchall()
