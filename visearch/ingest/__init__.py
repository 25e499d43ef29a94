"""``visearch ingest``: image folders and COCO datasets into the database.

Public API: :func:`ingest_folder`, :func:`ingest_coco`, :class:`IngestReport`, :class:`Skipped`.

Conventions the rest of visearch can rely on:

* ``images.source_uri`` is the absolute ``file://`` URI of the file as given (not
  symlink-resolved), e.g. ``file:///data/cifar10-test/cat/0001.jpg``; turn it into a path with
  :func:`path_from_source_uri`. With ``store_bytes=False`` that file is the only copy.
* ``images.file_name`` is the path relative to the ingested folder (``cat/0001.jpg``) for
  :func:`ingest_folder`, and the COCO ``file_name`` for :func:`ingest_coco`.
* ``images.width``/``height`` are after EXIF orientation (as :func:`decode_image` returns them).
* ``ingest_rejects`` holds, per dataset, the files that are currently not ingested and why: a
  run replaces earlier rows for the files it looked at.
"""

from __future__ import annotations

import time
from pathlib import Path

from visearch.config import DEFAULT_MAX_PIXELS
from visearch.db.database import Database
from visearch.ingest.coco import ingest_coco
from visearch.ingest.files import LoadedFile, display_name, list_files, path_from_source_uri, source_uri
from visearch.ingest.report import IngestReport, Skipped
from visearch.ingest.writer import ImagePipeline, ensure_concepts, insert_labels
from visearch.media import record_media_root

__all__ = [
    "IngestReport",
    "Skipped",
    "ingest_coco",
    "ingest_folder",
    "path_from_source_uri",
    "source_uri",
]

#: Labels made by ``labels_from_folders`` carry this ``image_labels.source``.
FOLDER_LABEL_SOURCE = "folder"



def ingest_folder(
    db: Database,
    dataset: str,
    folder: Path,
    *,
    store_bytes: bool = True,
    labels_from_folders: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    workers: int = 4,
) -> IngestReport:
    """Ingest every image under ``folder`` (recursively) into dataset ``dataset``.

    The dataset is created if missing. Each file is read, hashed (sha256 of its bytes), fully
    decoded once (so truncated or corrupt files are caught now, not at embedding time) and stored
    with its size in pixels after EXIF orientation, Pillow's format name, ``source_uri`` (absolute
    ``file://`` URI), ``file_name`` (path relative to ``folder``, with "/"), and, if
    ``store_bytes``, its original bytes in ``image_content``. Files whose bytes are already in the
    dataset are counted as existing, so re-running adds nothing. Every non-hidden file is tried;
    those that are not images, or are empty, truncated, corrupt, unreadable or larger than
    ``max_pixels`` are skipped, listed in the report and in ``ingest_rejects``.

    Args:
        db: the database.
        dataset: dataset name (created if missing; surrounding whitespace ignored).
        folder: the folder to walk; hidden files and folders (".*") are left out.
        store_bytes: keep the original bytes in the database (True) or only reference the file.
        labels_from_folders: label each image with its parent folder's name as a concept
            (``image_labels.source = 'folder'``), e.g. ``cifar10-test/cat/0001.jpg`` -> ``cat``.
            Files directly in ``folder`` get no label.
        max_pixels: largest accepted width x height (decompression-bomb guard).
        progress: show a tqdm progress bar (on stderr) with counts and rate.
        workers: threads reading/hashing/decoding files (>= 1).

    Returns:
        An :class:`IngestReport` with the rows really added and the files skipped.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        NotADirectoryError: ``folder`` is a file.
        ValueError: empty dataset name, ``workers`` or ``max_pixels`` < 1.
        psycopg.Error: the database failed (batches written before stay committed).
    """
    started = time.perf_counter()
    folder = Path(folder)
    files = list_files(folder)
    with ImagePipeline(
        db, dataset, store_bytes=store_bytes, max_pixels=max_pixels, workers=workers, progress=progress
    ) as pipeline:
        record_media_root(pipeline.conn, folder)  # reference-only files are served from here
        concept_ids: dict[str, int] = {}
        if labels_from_folders:
            names = {_label_of(folder, f) for f in files} - {None}
            with pipeline.conn.transaction():
                concept_ids, pipeline.report.concepts_added = ensure_concepts(pipeline.conn, names)

        def describe(path: Path, lf: LoadedFile):
            return display_name(path.relative_to(folder).as_posix()), None, {}

        def on_batch(conn, resolved) -> None:
            if not labels_from_folders:
                return
            pairs = []
            for path, _lf, ref in resolved:
                label = _label_of(folder, path)
                if ref is not None and label is not None and label.strip() in concept_ids:
                    pairs.append((ref.id, concept_ids[label.strip()]))
            pipeline.report.labels_added += insert_labels(conn, pairs, source=FOLDER_LABEL_SOURCE)

        report = pipeline.run(
            files, path_of=lambda p: p, describe=describe, on_batch=on_batch, desc=f"ingest {dataset}"
        )
    report.seconds = time.perf_counter() - started  # the whole call, folder walk included
    return report


def _label_of(root: Path, path: Path) -> str | None:
    """The parent folder's name, or None for a file directly in ``root`` (its name says nothing)."""
    if path.parent == root:
        return None
    name = display_name(path.parent.name)
    return name if name.strip() else None
