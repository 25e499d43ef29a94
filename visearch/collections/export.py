"""Export a collection as COCO JSON or CSV (SQL in ``sql/collections/export_*.sql``).

COCO (Lin et al. 2014, "Microsoft COCO: Common Objects in Context"; the instances format of
https://cocodataset.org/#format-data): ``images`` (the COCO id is the visearch image id; also
``external_id`` and ``dataset`` of the source, kept as metadata when re-ingested), ``annotations``
(``bbox`` [x, y, w, h] pixels, ``area`` = w * h, ``iscrowd``; images mode: every box of the
collection's images, objects mode: the collection's boxes) and ``categories`` (one per concept
used, id = concept id; boxes without a concept are left out). ``visearch ingest FOLDER -d NEW --coco export.json`` re-ingests it from
the original files.

CSV: one row per item in rank order (rank, score, ids, dataset, file, size, box, concept).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Any

from visearch.collections.service import _one, _page
from visearch.db.database import Database
from visearch.resources import read_sql

#: Items read for a CSV export (collections keep at most 1000 ranked items).
_MAX_ITEMS = 1_000_000

CSV_COLUMNS = ("rank", "score", "image_id", "annotation_id", "dataset", "file_name", "external_id",
               "width", "height", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "concept", "iscrowd")


def export_coco(db: Database, owner: str, collection_id: int) -> dict[str, Any]:
    """The collection as a COCO instances JSON object (see the module docstring).

    Raises:
        NotFoundError: no such collection of ``owner``.
    """
    with db.pooled() as conn:
        c = _one(conn, owner, collection_id)
        images = conn.execute(read_sql("collections/export_images.sql"), {"collection_id": collection_id}).fetchall()
        boxes = conn.execute(read_sql("collections/export_annotations.sql"),
                             {"collection_id": collection_id, "objects_only": c.mode == "objects"}).fetchall()
    categories: dict[int, str] = {}
    annotations = []
    for ann_id, image_id, concept_id, x, y, w, h, iscrowd, score, concept in boxes:
        if concept_id is None:  # COCO needs a category: boxes without a concept are left out
            continue
        categories[concept_id] = concept
        record = {"id": ann_id, "image_id": image_id, "category_id": concept_id,
                  "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(iscrowd)}
        if score is not None:
            record["score"] = score
        annotations.append(record)
    return {
        "info": {
            "description": f"visearch collection {c.id}" + (f" {c.name!r}" if c.name else "")
                           + f" ({c.mode}, model {c.model})",
            "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "images": [
            {"id": image_id, "file_name": file_name or f"{image_id}", "width": w, "height": h,
             "external_id": external_id, "dataset": dataset, "rank": rank,
             "coco_url": f"/v1/images/{image_id}/original"}
            for image_id, file_name, w, h, external_id, dataset, rank in images
        ],
        "annotations": annotations,
        "categories": [{"id": cid, "name": name} for cid, name in sorted(categories.items())],
    }


def export_csv(db: Database, owner: str, collection_id: int) -> str:
    """The collection's items as CSV text with a header row (:data:`CSV_COLUMNS`); boxes in
    COCO pixels, empty for images.

    Raises:
        NotFoundError: no such collection of ``owner``.
    """
    with db.pooled() as conn:
        _one(conn, owner, collection_id)
        items = _page(conn, collection_id, 0, _MAX_ITEMS)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for i in items:
        box = i.bbox_xywh or ("", "", "", "")
        writer.writerow([i.rank, f"{i.score:.6f}", i.image_id, i.annotation_id or "", i.dataset,
                         i.file_name or "", i.external_id or "", i.width, i.height, *box,
                         i.concept or "", "" if i.iscrowd is None else int(i.iscrowd)])
    return out.getvalue()
