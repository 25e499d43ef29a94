"""Writing an ingest to the database: datasets, concepts, images (+ bytes), labels, boxes, captions.

Everything is ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, so a repeated run inserts nothing
and the counts in the report are what really went in. Images are written one transaction per
batch (~200 images or ~64 MB) by :class:`ImagePipeline`, which also runs the thread pool that
reads, hashes and decodes the files (see :mod:`visearch.ingest.files`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Sequence, TypeVar

import psycopg
from tqdm import tqdm

from visearch.db.database import Database
from visearch.ingest.files import LoadedFile, bounded_map, load_file
from visearch.ingest.report import IngestReport, Skipped

T = TypeVar("T")

#: Images per write transaction: large enough to amortise round trips, small enough that a
#: failure loses little work and memory stays flat.
BATCH_IMAGES = 200
#: Flush a batch early once its files reach this many bytes (large photos).
BATCH_BYTES = 64 * 1024 * 1024


def ensure_dataset(conn: psycopg.Connection, name: str) -> int:
    """The id of dataset ``name``, creating it if missing."""
    # Look first: a conflicting INSERT would still use up an identity value on every re-run.
    row = conn.execute("SELECT id FROM datasets WHERE name = %s", (name,)).fetchone()
    if row is None:
        row = conn.execute(
            "INSERT INTO datasets (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING id", (name,)
        ).fetchone()
    if row is None:  # created meanwhile by a concurrent ingest
        row = conn.execute("SELECT id FROM datasets WHERE name = %s", (name,)).fetchone()
    return int(row[0])


def ensure_concepts(conn: psycopg.Connection, names: Iterable[str]) -> tuple[dict[str, int], int]:
    """Concept ids for ``names`` (created if missing) and how many were created.

    A name whose tag is already taken by another concept (``"traffic light"`` vs
    ``"traffic_light"``: same ``#traffic_light``) maps to that existing concept instead of failing.
    """
    wanted = sorted({n.strip() for n in names if n and n.strip()})
    if not wanted:
        return {}, 0
    added = conn.execute(
        "INSERT INTO concepts (name) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING RETURNING id",
        (wanted,),
    ).fetchall()
    rows = conn.execute(
        """
        SELECT DISTINCT ON (n) n, c.id
        FROM unnest(%s::text[]) AS n
        JOIN concepts c ON c.name = n OR c.tag = concept_tag(n)
        ORDER BY n, (c.name = n) DESC
        """,
        (wanted,),
    ).fetchall()
    ids = {name: int(cid) for name, cid in rows}
    # Callers look concepts up by the name they gave, stripped or not.
    for n in names:
        if n and n.strip() in ids:
            ids[n] = ids[n.strip()]
    return ids, len(added)


@dataclass(frozen=True)
class ImageRef:
    """An image row as later steps need it: id and stored (post-EXIF) size in pixels."""

    id: int
    width: int
    height: int


def known_images(conn: psycopg.Connection, dataset_id: int) -> dict[bytes, ImageRef]:
    """sha256 -> image of everything already in the dataset (~100 bytes per image in memory)."""
    rows = conn.execute(
        "SELECT sha256, id, width, height FROM images WHERE dataset_id = %s", (dataset_id,)
    ).fetchall()
    return {bytes(sha): ImageRef(int(i), int(w), int(h)) for sha, i, w, h in rows}


@dataclass
class NewImage:
    """A row for ``images`` (plus its bytes for ``image_content``)."""

    sha256: bytes
    width: int
    height: int
    format: str
    source_uri: str
    file_name: str | None
    external_id: str | None
    metadata: dict[str, Any]
    data: bytes


def lock_dataset_images(conn: psycopg.Connection, dataset_id: int) -> None:
    """Take the per-dataset lock that keeps one image per (dataset, sha256), until the
    transaction ends (a transaction advisory lock; on Citus, on the coordinator).

    Every writer that adds images to a dataset (``insert_images``, a collection's copy into a
    dataset) takes it, then inserts only the sha256s the dataset does not have (an anti-join), in
    a statement that starts after the lock is granted, so it sees what the previous holder
    committed. ``ON CONFLICT (dataset_id, sha256)`` cannot be the rule: on Citus a unique
    constraint must contain the distribution column (the image id), so that constraint exists on
    one node only. ``conn`` must be inside a transaction (not autocommit).
    """
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('visearch.ingest:' || %s, 0))", (dataset_id,))


def insert_images(
    conn: psycopg.Connection, dataset_id: int, rows: Sequence[NewImage], *, store_bytes: bool
) -> tuple[dict[bytes, ImageRef], set[bytes]]:
    """Insert images (distinct sha256s) and, if ``store_bytes``, their bytes.

    Returns every row's image (by sha256) and the set of sha256s this call really inserted; the
    others were inserted meanwhile by a concurrent ingest of the same dataset.
    """
    if not rows:
        return {}, set()
    # One image per (dataset, sha256): the anti-join under the dataset's lock (see
    # lock_dataset_images; on one node ON CONFLICT DO NOTHING still skips a row another writer
    # inserted without the lock). The lock lasts until the batch commits, so two ingests of one
    # dataset never add the same bytes twice.
    lock_dataset_images(conn, dataset_id)
    shas = [r.sha256 for r in rows]
    inserted = conn.execute(
        """
        INSERT INTO images (dataset_id, sha256, width, height, format, source_uri, file_name,
                            external_id, metadata)
        SELECT %s, s, w, h, f, u, n, e, m::jsonb
        FROM unnest(%s::bytea[], %s::int[], %s::int[], %s::text[], %s::text[], %s::text[],
                    %s::text[], %s::text[]) AS t(s, w, h, f, u, n, e, m)
        WHERE s NOT IN (SELECT sha256 FROM images WHERE dataset_id = %s AND sha256 = ANY (%s::bytea[]))
        ON CONFLICT DO NOTHING
        RETURNING sha256, id, width, height
        """,
        (
            dataset_id,
            shas,
            [r.width for r in rows],
            [r.height for r in rows],
            [r.format for r in rows],
            [r.source_uri for r in rows],
            [r.file_name for r in rows],
            [r.external_id for r in rows],
            [json.dumps(r.metadata, allow_nan=False, default=str) for r in rows],
            dataset_id,
            shas,
        ),
    ).fetchall()
    refs = {bytes(s): ImageRef(int(i), int(w), int(h)) for s, i, w, h in inserted}
    added = set(refs)
    missing = [r.sha256 for r in rows if r.sha256 not in refs]
    if missing:
        for s, i, w, h in conn.execute(
            "SELECT sha256, id, width, height FROM images WHERE dataset_id = %s AND sha256 = ANY(%s)",
            (dataset_id, missing),
        ):
            refs[bytes(s)] = ImageRef(int(i), int(w), int(h))
    if store_bytes and added:
        # Binary COPY: the bytes go over the wire once, unescaped; the fastest way into bytea.
        with conn.cursor() as cur:
            with cur.copy("COPY image_content (image_id, content) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "bytea"])
                for r in rows:
                    if r.sha256 in added:
                        copy.write_row((refs[r.sha256].id, r.data))
    return refs, added


def replace_rejects(
    conn: psycopg.Connection, dataset_id: int, processed_uris: Sequence[str], rejects: Sequence[Skipped],
    *, clear_old: bool,
) -> None:
    """Make ``ingest_rejects`` say, for each processed file, why it was not taken (if it wasn't).

    Earlier rejects of the same files are deleted first (``clear_old``), so the table lists what
    is currently not ingested and why, not one row per run: a file fixed and re-ingested drops out.
    """
    if clear_old and processed_uris:
        conn.execute(
            "DELETE FROM ingest_rejects WHERE dataset_id = %s AND source_uri = ANY(%s)",
            (dataset_id, list(processed_uris)),
        )
    if rejects:
        conn.execute(
            "INSERT INTO ingest_rejects (dataset_id, source_uri, reason)"
            " SELECT %s, u, r FROM unnest(%s::text[], %s::text[]) AS t(u, r)",
            (dataset_id, [s.source_uri for s in rejects], [s.reason for s in rejects]),
        )


def insert_labels(conn: psycopg.Connection, pairs: Sequence[tuple[int, int]], *, source: str) -> int:
    """Insert (image_id, concept_id) labels with ``source``; returns how many were new."""
    if not pairs:
        return 0
    return len(
        conn.execute(
            "INSERT INTO image_labels (image_id, concept_id, source)"
            " SELECT i, c, %s FROM unnest(%s::bigint[], %s::bigint[]) AS t(i, c)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            (source, [p[0] for p in pairs], [p[1] for p in pairs]),
        ).fetchall()
    )


@dataclass
class NewAnnotation:
    """A box in COCO convention: pixels, top-left origin, [x, y, w, h]."""

    image_id: int
    concept_id: int | None
    bbox: tuple[float, float, float, float]
    iscrowd: bool
    external_id: str
    metadata: dict[str, Any]
    uri: str  # for the report if the database rejects it


def bbox_problem(bbox: Any) -> str | None:
    """Why ``bbox`` (as read from JSON) is not ``[x, y, width, height]`` numbers, or None.

    Only the shape: whether a box is valid on its image (finite, positive area, origin >= 0,
    inside the image with 0.01 px tolerance) is decided once, by the database's constraints on
    ``annotations`` (0001_core.sql); :func:`insert_annotations` reports a refused box with the
    database's reason and keeps the rest.
    """
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"bad_box: bbox must be [x, y, width, height], got {bbox!r}"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        return f"bad_box: bbox values must be numbers, got {bbox!r}"
    return None


_INSERT_ANNOTATIONS = """
    INSERT INTO annotations (image_id, concept_id, bbox_x, bbox_y, bbox_w, bbox_h, iscrowd,
                             source, external_id, metadata)
    SELECT i, c, x, y, w, h, z, %s, e, m::jsonb
    FROM unnest(%s::bigint[], %s::bigint[], %s::float8[], %s::float8[], %s::float8[],
                %s::float8[], %s::bool[], %s::text[], %s::text[]) AS t(i, c, x, y, w, h, z, e, m)
    ON CONFLICT (image_id, source, external_id) DO NOTHING
    RETURNING 1
"""


def insert_annotations(
    conn: psycopg.Connection, rows: Sequence[NewAnnotation], *, source: str
) -> tuple[int, list[Skipped]]:
    """Insert boxes; returns how many were new, and the rows the database refused with why.

    One statement for the whole list inside a savepoint; only if it fails is each row retried
    in its own savepoint, so one bad box costs the batch nothing but its own row.
    """

    def params(rs: Sequence[NewAnnotation]) -> tuple:
        return (
            source,
            [r.image_id for r in rs],
            [r.concept_id for r in rs],
            [r.bbox[0] for r in rs],
            [r.bbox[1] for r in rs],
            [r.bbox[2] for r in rs],
            [r.bbox[3] for r in rs],
            [r.iscrowd for r in rs],
            [r.external_id for r in rs],
            [json.dumps(r.metadata, allow_nan=False, default=str) for r in rs],
        )

    return _insert_with_fallback(conn, _INSERT_ANNOTATIONS, rows, params, "bad_box")


_INSERT_CAPTIONS = """
    INSERT INTO captions (image_id, text, source, external_id)
    SELECT i, x, %s, e FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS t(i, x, e)
    ON CONFLICT (image_id, source, external_id) DO NOTHING
    RETURNING 1
"""


@dataclass
class NewCaption:
    image_id: int
    text: str
    external_id: str
    uri: str


def insert_captions(
    conn: psycopg.Connection, rows: Sequence[NewCaption], *, source: str
) -> tuple[int, list[Skipped]]:
    """Insert captions; returns how many were new, and the rows the database refused with why."""

    def params(rs: Sequence[NewCaption]) -> tuple:
        return (source, [r.image_id for r in rs], [r.text for r in rs], [r.external_id for r in rs])

    return _insert_with_fallback(conn, _INSERT_CAPTIONS, rows, params, "bad_caption")


def _insert_with_fallback(conn, sql, rows, params, kind) -> tuple[int, list[Skipped]]:
    if not rows:
        return 0, []
    try:
        with conn.transaction():  # a savepoint: its failure leaves the batch transaction usable
            return len(conn.execute(sql, params(rows)).fetchall()), []
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError):
        pass
    added, refused = 0, []
    for row in rows:
        try:
            with conn.transaction():
                added += len(conn.execute(sql, params([row])).fetchall())
        except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
            message = exc.diag.message_primary or str(exc)
            refused.append(Skipped(row.uri, f"{kind}: refused by the database: {message}"))
    return added, refused


class ImagePipeline(Generic[T]):
    """Read + hash + decode files on a thread pool, write them in batched transactions.

    Drives one ingest: ``items`` are whatever the caller iterates (paths, COCO image records);
    ``path_of`` maps each to its file, ``describe`` gives the row's file_name, external_id and
    metadata, and ``on_batch`` runs inside each batch's transaction after the images are written,
    with every item of the batch and its :class:`ImageRef` (None when the file was skipped) --
    that is where labels, boxes and captions go, atomically with their images.
    """

    def __init__(
        self,
        db: Database,
        dataset: str,
        *,
        store_bytes: bool,
        max_pixels: int,
        workers: int,
        progress: bool,
        batch_images: int = BATCH_IMAGES,
        batch_bytes: int = BATCH_BYTES,
        skip_non_images: bool = True,
    ):
        if not dataset or not dataset.strip():
            raise ValueError("dataset name must not be empty")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
        self.db = db
        self.store_bytes = store_bytes
        self.max_pixels = max_pixels
        self.workers = workers
        self.progress = progress
        self.batch_images = max(1, batch_images)
        self.batch_bytes = batch_bytes
        self.skip_non_images = skip_non_images
        self.started = time.perf_counter()
        # autocommit: each `with conn.transaction()` below is then exactly one real transaction.
        self.conn = db.connect(autocommit=True)
        try:
            self.dataset_id = ensure_dataset(self.conn, dataset.strip())
            self.known = known_images(self.conn, self.dataset_id)
            self.had_rejects = (
                self.conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM ingest_rejects WHERE dataset_id = %s)", (self.dataset_id,)
                ).fetchone()[0]
            )
        except BaseException:
            self.conn.close()
            raise
        self.report = IngestReport(dataset=dataset.strip(), dataset_id=self.dataset_id)
        self._avg_bytes = 0.0
        self._loaded = 0

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ImagePipeline[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _window(self) -> int:
        # How many files may be read ahead of the writer: a full batch for small files (so
        # decoding overlaps the previous batch's write), fewer for big ones (memory).
        floor = 2 * self.workers
        if self._loaded < floor:
            return floor
        by_bytes = int(self.batch_bytes // max(self._avg_bytes, 1.0))
        return max(floor, min(self.batch_images, by_bytes))

    def _load(self, path: Path) -> LoadedFile:
        return load_file(path, max_pixels=self.max_pixels, known_sha256=self.known,
                         skip_non_images=self.skip_non_images)

    def run(
        self,
        items: Sequence[T],
        *,
        path_of: Callable[[T], Path],
        describe: Callable[[T, LoadedFile], tuple[str | None, str | None, dict[str, Any]]],
        on_batch: Callable[[psycopg.Connection, list[tuple[T, LoadedFile, ImageRef | None]]], None]
        | None = None,
        desc: str = "ingest",
    ) -> IngestReport:
        """Ingest ``items``; returns the report (``seconds`` set). Errors other than bad files
        (database down, disk gone) propagate; batches already written stay committed."""
        bar = tqdm(total=len(items), desc=desc, unit="img", disable=not self.progress, dynamic_ncols=True)
        batch: list[tuple[T, LoadedFile]] = []
        batch_size = 0
        try:
            loaded = bounded_map(
                lambda item: (item, self._load(path_of(item))),
                items,
                workers=self.workers,
                window=self._window,
            )
            for item, lf in loaded:
                size = len(lf.data) if lf.data is not None else 0
                self._loaded += 1
                self._avg_bytes += (size - self._avg_bytes) / self._loaded
                batch.append((item, lf))
                batch_size += size
                if len(batch) >= self.batch_images or batch_size >= self.batch_bytes:
                    self._flush(batch, describe, on_batch)
                    self._postfix(bar)
                    bar.update(len(batch))
                    batch, batch_size = [], 0
            if batch:
                self._flush(batch, describe, on_batch)
                self._postfix(bar)
                bar.update(len(batch))
        finally:
            bar.close()
        self.report.seconds = time.perf_counter() - self.started
        return self.report

    def _postfix(self, bar: tqdm) -> None:
        r = self.report
        # A string, not set_postfix(**counts): tqdm would print 10000 as "1e+4".
        bar.set_postfix_str(
            f"added={r.images_added} existing={r.images_existing} skipped={len(r.skipped)}", refresh=False
        )

    def _flush(self, batch, describe, on_batch) -> None:
        rows: dict[bytes, NewImage] = {}
        rejects: list[Skipped] = []
        for item, lf in batch:
            if lf.not_image:
                self.report.not_images += 1
            elif lf.reason is not None:
                rejects.append(Skipped(lf.uri, lf.reason))
            elif not lf.known and lf.sha256 not in self.known and lf.sha256 not in rows:
                file_name, external_id, metadata = describe(item, lf)
                rows[lf.sha256] = NewImage(
                    sha256=lf.sha256, width=lf.width, height=lf.height, format=lf.format,
                    source_uri=lf.uri, file_name=file_name, external_id=external_id,
                    metadata=metadata, data=lf.data,
                )
        with self.conn.transaction():
            # a backfill: queued behind interactive writes (sql/schema/0006_hardening.sql)
            # (on Citus the enqueue triggers run in the shards' sessions: pass the SET LOCAL on)
            self.conn.execute("SET LOCAL citus.propagate_set_commands = 'local'")
            self.conn.execute("SET LOCAL visearch.queue_priority = 'bulk'")
            refs, added = insert_images(self.conn, self.dataset_id, list(rows.values()), store_bytes=self.store_bytes)
            replace_rejects(
                self.conn, self.dataset_id, [lf.uri for _, lf in batch], rejects, clear_old=self.had_rejects
            )
            resolved: list[tuple[T, LoadedFile, ImageRef | None]] = []
            for item, lf in batch:
                if lf.reason is not None or lf.not_image:
                    resolved.append((item, lf, None))
                    continue
                ref = refs.get(lf.sha256) or self.known[lf.sha256]
                if lf.sha256 in added:
                    added.discard(lf.sha256)  # a second file with the same bytes counts as existing
                    self.report.images_added += 1
                else:
                    self.report.images_existing += 1
                resolved.append((item, lf, ref))
            if on_batch is not None:
                on_batch(self.conn, resolved)
        # Only after the commit: a rolled-back batch must not leave ids that do not exist.
        self.known.update(refs)
        self.report.skipped.extend(rejects)
        for _, lf in batch:
            lf.data = None  # release the bytes now, not when the batch list goes
