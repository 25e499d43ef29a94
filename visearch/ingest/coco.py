"""COCO datasets: images + categories + boxes (instances JSON) and captions (captions JSON)."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from visearch.config import DEFAULT_MAX_PIXELS
from visearch.db.database import Database
from visearch.ingest.files import LoadedFile, source_uri
from visearch.media import record_media_root
from visearch.ingest.report import IngestReport, Skipped
from visearch.ingest.writer import (
    ImagePipeline,
    NewAnnotation,
    NewCaption,
    bbox_problem,
    ensure_concepts,
    insert_annotations,
    insert_captions,
)

#: ``source`` of the annotations and captions written from COCO files.
COCO_SOURCE = "coco"
# Fields of a COCO image record that have their own columns; the rest goes to images.metadata.
_IMAGE_COLUMNS = ("id", "file_name", "width", "height")
# Fields of a COCO annotation that have their own columns; the rest (area, segmentation, ...)
# goes to annotations.metadata so nothing of the source is lost.
_ANNOTATION_COLUMNS = ("id", "image_id", "category_id", "bbox", "iscrowd")



def load_coco(path: Path, *, kind: str) -> COCO:
    """Parse a COCO JSON file with pycocotools (its progress prints silenced) and check its shape.

    ``kind`` is ``"instances"`` or ``"captions"``: instances need ``categories``, captions need
    annotations with a ``caption``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, not a COCO object, or missing what ``kind`` needs; names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO {kind} JSON not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(os.fspath(path))
    except (ValueError, AssertionError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        # json.JSONDecodeError is a ValueError; pycocotools asserts a dict and indexes keys.
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path}: malformed COCO {kind} JSON: {detail}") from exc
    data = coco.dataset
    images = data.get("images")
    if not isinstance(images, list):
        raise ValueError(f"{path}: malformed COCO {kind} JSON: no 'images' list")
    for i, rec in enumerate(images):
        if not isinstance(rec, dict) or not isinstance(rec.get("file_name"), str) or "id" not in rec:
            raise ValueError(f"{path}: malformed COCO {kind} JSON: images[{i}] needs 'id' and 'file_name'")
    if not isinstance(data.get("annotations", []), list):
        raise ValueError(f"{path}: malformed COCO {kind} JSON: 'annotations' is not a list")
    if kind == "instances":
        cats = data.get("categories")
        if not isinstance(cats, list):
            raise ValueError(
                f"{path}: malformed COCO instances JSON: no 'categories' list"
                " (a captions file? pass it as captions_json)"
            )
        for i, cat in enumerate(cats):
            if not isinstance(cat, dict) or "id" not in cat or not str(cat.get("name", "")).strip():
                raise ValueError(f"{path}: malformed COCO instances JSON: categories[{i}] needs 'id' and 'name'")
    elif kind == "captions":
        anns = data.get("annotations", [])
        if anns and not isinstance(anns[0].get("caption"), str):
            raise ValueError(
                f"{path}: malformed COCO captions JSON: annotations have no 'caption'"
                " (an instances file? pass it as instances_json)"
            )
    return coco


def ingest_coco(
    db: Database,
    dataset: str,
    image_dir: Path,
    instances_json: Path | None = None,
    captions_json: Path | None = None,
    *,
    store_bytes: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    workers: int = 4,
) -> IngestReport:
    """Ingest a COCO dataset: the images listed in the JSON(s), their boxes and/or captions.

    Images are the JSON's ``images`` records (union of both files, by COCO image id), read from
    ``image_dir / file_name``; files in ``image_dir`` that no record names are ignored. Each image
    gets ``external_id`` = the COCO image id (text) and ``metadata`` = its record minus the fields
    with columns (license, coco_url, flickr_url, date_captured, ...). From ``instances_json``:
    every category becomes a concept (used or not), every box an annotation (``source 'coco'``,
    ``external_id`` = annotation id, ``iscrowd``, concept; area/segmentation in metadata). From
    ``captions_json``: captions (``source 'coco'``, ``external_id`` = caption id). Instances and
    captions may come in one call or two; images are never duplicated (sha256 per dataset).

    Skipped (in the report; files also in ``ingest_rejects``): missing/corrupt/... image files;
    boxes outside the image or without area (checked here, and the database has the last word);
    boxes and captions of skipped images or of image ids the JSON does not list; captions with
    no text. The other rows of the same image still go in.

    Args:
        db: the database.
        dataset: dataset name (created if missing).
        image_dir: folder holding the images (e.g. ``coco/train2017``).
        instances_json: COCO instances file (``instances_*.json``), or None.
        captions_json: COCO captions file (``captions_*.json``), or None.
        store_bytes, max_pixels, progress, workers: as for :func:`~visearch.ingest.ingest_folder`.

    Returns:
        An :class:`IngestReport`; ``warnings`` lists images whose size differs from the JSON.

    Raises:
        FileNotFoundError: ``image_dir`` or a given JSON file does not exist.
        ValueError: neither JSON given; a JSON is malformed (message names the file); the two
            files give one image id different file names; bad ``workers``/``max_pixels``.
    """
    started = time.perf_counter()
    image_dir = Path(image_dir)
    if instances_json is None and captions_json is None:
        raise ValueError("ingest_coco needs instances_json and/or captions_json (for a plain folder use ingest_folder)")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"COCO image folder not found: {image_dir}")
    instances = load_coco(Path(instances_json), kind="instances") if instances_json is not None else None
    captions = load_coco(Path(captions_json), kind="captions") if captions_json is not None else None

    records: dict[Any, dict[str, Any]] = {}
    for coco, path in ((instances, instances_json), (captions, captions_json)):
        if coco is None:
            continue
        for rec in coco.dataset["images"]:
            prior = records.get(rec["id"])
            if prior is None:
                records[rec["id"]] = rec
            elif prior["file_name"] != rec["file_name"]:
                raise ValueError(
                    f"{path}: image id {rec['id']} is {rec['file_name']!r} here but "
                    f"{prior['file_name']!r} in the other COCO file"
                )
            else:
                records[rec["id"]] = {**rec, **prior}

    # Boxes and captions by image; those of image ids no record lists are reported, not lost.
    orphans: list[Skipped] = []
    boxes_by_image: dict[Any, list[dict]] = defaultdict(list)
    caps_by_image: dict[Any, list[dict]] = defaultdict(list)
    for coco, path, by_image, what in (
        (instances, instances_json, boxes_by_image, "annotation"),
        (captions, captions_json, caps_by_image, "caption"),
    ):
        if coco is None:
            continue
        uri = source_uri(Path(path))
        for ann in coco.dataset.get("annotations", []):
            if ann["image_id"] in records:
                by_image[ann["image_id"]].append(ann)
            else:
                orphans.append(
                    Skipped(f"{uri}#{what}={ann['id']}", f"unknown_image: image id {ann['image_id']} is not in 'images'")
                )
    instances_uri = source_uri(Path(instances_json)) if instances_json is not None else ""
    captions_uri = source_uri(Path(captions_json)) if captions_json is not None else ""

    with ImagePipeline(
        db, dataset, store_bytes=store_bytes, max_pixels=max_pixels, workers=workers, progress=progress,
        skip_non_images=False,
    ) as pipeline:
        record_media_root(pipeline.conn, image_dir)
        report = pipeline.report
        category_concept: dict[Any, int] = {}
        if instances is not None:
            cats = instances.dataset["categories"]
            with pipeline.conn.transaction():
                ids, report.concepts_added = ensure_concepts(pipeline.conn, [str(c["name"]) for c in cats])
            category_concept = {c["id"]: ids[str(c["name"])] for c in cats}

        def describe(rec: dict, lf: LoadedFile):
            metadata = {k: v for k, v in rec.items() if k not in _IMAGE_COLUMNS}
            if (rec.get("width"), rec.get("height")) != (lf.width, lf.height):
                # Keep the JSON's size so the disagreement stays visible next to the boxes.
                metadata["coco_width"], metadata["coco_height"] = rec.get("width"), rec.get("height")
                report.warnings.append(
                    f"{lf.uri}: COCO says {rec.get('width')}x{rec.get('height')}, the file is "
                    f"{lf.width}x{lf.height} after EXIF orientation; boxes may not line up"
                )
            return rec["file_name"], str(rec["id"]), metadata

        def on_batch(conn, resolved) -> None:
            boxes: list[NewAnnotation] = []
            caps: list[NewCaption] = []
            skipped: list[Skipped] = []
            for rec, lf, ref in resolved:
                for ann in boxes_by_image.get(rec["id"], ()):
                    uri = f"{instances_uri}#annotation={ann['id']}"
                    if ref is None:
                        skipped.append(Skipped(uri, f"image_skipped: its image {rec['file_name']} was not ingested"))
                        continue
                    problem = bbox_problem(ann.get("bbox"))
                    if problem is None and ann.get("category_id") not in category_concept:
                        problem = f"unknown_category: category id {ann.get('category_id')} is not in 'categories'"
                    if problem is not None:
                        skipped.append(Skipped(uri, problem))
                        continue
                    boxes.append(
                        NewAnnotation(
                            image_id=ref.id,
                            concept_id=category_concept[ann["category_id"]],
                            bbox=tuple(float(v) for v in ann["bbox"]),
                            iscrowd=bool(ann.get("iscrowd", 0)),
                            external_id=str(ann["id"]),
                            metadata={k: v for k, v in ann.items() if k not in _ANNOTATION_COLUMNS},
                            uri=uri,
                        )
                    )
                for ann in caps_by_image.get(rec["id"], ()):
                    uri = f"{captions_uri}#caption={ann['id']}"
                    text = ann.get("caption")
                    if ref is None:
                        skipped.append(Skipped(uri, f"image_skipped: its image {rec['file_name']} was not ingested"))
                    elif not isinstance(text, str) or not text.strip():
                        skipped.append(Skipped(uri, "bad_caption: no caption text"))
                    else:
                        caps.append(NewCaption(image_id=ref.id, text=text.strip(), external_id=str(ann["id"]), uri=uri))
            added, refused = insert_annotations(conn, boxes, source=COCO_SOURCE)
            report.annotations_added += added
            added_caps, refused_caps = insert_captions(conn, caps, source=COCO_SOURCE)
            report.captions_added += added_caps
            report.skipped.extend(skipped + refused + refused_caps)

        items = [records[k] for k in sorted(records, key=lambda k: (str(type(k)), k))]
        pipeline.run(
            items,
            path_of=lambda rec: image_dir / rec["file_name"],
            describe=describe,
            on_batch=on_batch,
            desc=f"ingest {dataset}",
        )
        report.skipped.extend(orphans)
        report.seconds = time.perf_counter() - started  # the whole call, JSON parsing included
        return report
