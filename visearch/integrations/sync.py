"""The sync engine: a tool project's tasks, boxes and choices into visearch, once or live.

:func:`link_project` records which dataset a tool project feeds; :func:`sync_project` makes
visearch's rows match the tool's current state (idempotent: a second run changes nothing);
:func:`follow` LISTENs for the notify-only triggers on the tool's tables and re-syncs the
project that changed, within milliseconds of the tool's commit. What a sync writes is
visearch's own ``images``, ``annotations`` and ``image_labels`` (SQL in
``sql/integrations/``), so their triggers queue new and moved boxes for the embedding worker
like any other client's writes; the worker then makes them searchable.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable, Iterable

import psycopg

from visearch.config import Settings
from visearch.db.database import Database
from visearch.errors import InvalidRequestError, NotFoundError
from visearch.ingest.writer import ImagePipeline, ensure_concepts, ensure_dataset
from visearch.integrations.base import AnnotationTool, SyncReport, ToolBox, ToolTask
from visearch.resources import read_sql

log = logging.getLogger(__name__)

#: The channel the triggers on tools' tables notify; payload ``"<tool>:<project id>"``.
NOTIFY_CHANNEL = "visearch_annotation_tool"


def default_dataset_name(tool: AnnotationTool, project_id: int) -> str:
    """``"label-studio-7"``: the dataset a project feeds when none is named."""
    return f"{tool.name}-{project_id}"


def link_project(db: Database, tool: AnnotationTool, project_id: int, dataset: str | None = None) -> str:
    """Link tool project ``project_id`` to ``dataset`` (created if missing) and install the
    tool's notify triggers; returns the dataset name. Re-linking to another dataset moves only
    where *new* tasks' images go.

    Raises:
        InvalidRequestError: the tool's tables are not in this database (message says where
            they were looked for).
        NotFoundError: no such project in the tool.
    """
    with db.transaction() as conn:
        tool.check_tables(conn)
        if project_id not in tool.projects(conn):
            raise NotFoundError(f"{tool.name} has no project {project_id} (schema {tool.schema!r})")
        name = (dataset or default_dataset_name(tool, project_id)).strip()
        dataset_id = ensure_dataset(conn, name)
        conn.execute(read_sql("integrations/link_project.sql"),
                     {"tool": tool.name, "project": project_id, "schema": tool.schema, "dataset_id": dataset_id})
        tool.install_triggers(conn)
    return name


def linked_projects(db: Database, tool: AnnotationTool) -> list[int]:
    """Ids of the tool's projects linked to visearch."""
    with db.connect() as conn:
        rows = conn.execute("SELECT project_id FROM tool_projects WHERE tool = %s ORDER BY project_id",
                            (tool.name,)).fetchall()
    return [int(r[0]) for r in rows]


def sync_project(db: Database, tool: AnnotationTool, project_id: int, settings: Settings) -> SyncReport:
    """Make visearch match tool project ``project_id`` now.

    1. Tasks not linked yet become images: a task visearch created links to its image; a task
       file inside the media roots is ingested into the linked dataset (sha256-deduplicated,
       like ``visearch ingest``); others are recorded in ``tool_sync_rejects`` with why.
    2. In one transaction (serialised per project with an advisory lock): links of tasks
       deleted in the tool are dropped; every current box is inserted or updated (a moved box
       is re-queued for embedding by visearch's trigger; a relabelled one is not: its pixels
       did not change); boxes and labels the tool no longer has are deleted (their vectors go
       with them); rejects are replaced.

    Returns:
        A :class:`SyncReport` of what changed.

    Raises:
        NotFoundError: the project is not linked (run :func:`link_project` first).
        psycopg.Error: the database failed (nothing of step 2 is kept).
    """
    started = time.perf_counter()
    with db.connect() as conn:
        row = conn.execute(
            "SELECT d.id, d.name FROM tool_projects p JOIN datasets d ON d.id = p.dataset_id"
            " WHERE p.tool = %s AND p.project_id = %s", (tool.name, project_id)).fetchone()
        if row is None:
            raise NotFoundError(f"{tool.name} project {project_id} is not linked; run `visearch connect {tool.name} --project {project_id}`")
        dataset_id, dataset = int(row[0]), row[1]
        report = SyncReport(tool=tool.name, project_id=project_id, dataset=dataset)
        tasks = tool.tasks(conn, project_id)
        linked = dict(conn.execute(
            "SELECT task_id, image_id FROM tool_tasks WHERE tool = %s AND project_id = %s",
            (tool.name, project_id)).fetchall())
        conn.rollback()
    report.tasks = len(tasks)
    rejects: list[tuple[int | None, str]] = [(t.task_id, t.reject) for t in tasks if t.reject]
    new = [t for t in tasks if t.task_id not in linked and not t.reject]
    _link_new_tasks(db, tool, project_id, dataset, new, settings, report, rejects)

    current = {t.task_id for t in tasks}
    with db.transaction() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"visearch.tool:{tool.name}:{project_id}",))
        image_ids = [int(r[0]) for r in conn.execute(
            "SELECT image_id FROM tool_tasks WHERE tool = %s AND project_id = %s", (tool.name, project_id))]
        gone = conn.execute(
            "DELETE FROM tool_tasks WHERE tool = %s AND project_id = %s AND NOT (task_id = ANY(%s)) RETURNING 1",
            (tool.name, project_id, list(current))).fetchall()
        report.tasks_unlinked = len(gone)
        boxes, labels, result_rejects = tool.results(conn, project_id)
        rejects.extend(result_rejects)
        boxes = _valid_boxes(conn, boxes, rejects)
        concept_ids, _ = ensure_concepts(conn, [b.concept for b in boxes] + [lab.concept for lab in labels])
        _write_boxes(conn, tool, project_id, boxes, concept_ids, image_ids, report)
        _write_labels(conn, tool, labels, concept_ids, image_ids, report)
        conn.execute("DELETE FROM tool_sync_rejects WHERE tool = %s AND project_id = %s", (tool.name, project_id))
        if rejects:
            conn.execute(
                "INSERT INTO tool_sync_rejects (tool, project_id, task_id, reason)"
                " SELECT %s, %s, t, r FROM unnest(%s::bigint[], %s::text[]) AS u(t, r)",
                (tool.name, project_id, [t for t, _ in rejects], [r for _, r in rejects]))
        conn.execute("UPDATE tool_projects SET synced_at = now() WHERE tool = %s AND project_id = %s",
                     (tool.name, project_id))
    report.rejects = rejects
    report.seconds = time.perf_counter() - started
    return report


def _link_new_tasks(db, tool, project_id, dataset, new: list[ToolTask], settings, report, rejects) -> None:
    by_image = [t for t in new if t.image_id is not None]
    by_file = [t for t in new if t.path is not None]
    if by_image:
        with db.transaction() as conn:
            added = conn.execute(
                read_sql("integrations/link_task_images.sql"),
                {"tool": tool.name, "project": project_id,
                 "task_ids": [t.task_id for t in by_image], "image_ids": [t.image_id for t in by_image]},
            ).fetchall()
        report.tasks_linked += len(added)
        missing = {t.task_id for t in by_image} - {int(r[0]) for r in added}
        rejects.extend((t, "the visearch image it was made from no longer exists") for t in sorted(missing))
    if not by_file:
        return

    def on_batch(conn, resolved) -> None:
        pairs = [(t.task_id, ref.id) for t, _lf, ref in resolved if ref is not None]
        rows = conn.execute(
            read_sql("integrations/link_task_images.sql"),
            {"tool": tool.name, "project": project_id,
             "task_ids": [p[0] for p in pairs], "image_ids": [p[1] for p in pairs]},
        ).fetchall()
        report.tasks_linked += len(rows)
        rejects.extend((t.task_id, f"{lf.reason}") for t, lf, ref in resolved if ref is None)

    with ImagePipeline(db, dataset, store_bytes=settings.store_image_bytes, max_pixels=settings.max_image_pixels,
                       workers=2, progress=False) as pipeline:
        ingest = pipeline.run(
            by_file, path_of=lambda t: t.path,
            describe=lambda t, lf: (t.path.name, None, {"tool": tool.name, "tool_project": project_id, "tool_task": t.task_id}),
            on_batch=on_batch, desc=f"{tool.name} {project_id}")
    report.images_added += ingest.images_added


class _Probe(Exception):
    """Rolls back a probe insert (:func:`_valid_boxes`)."""


def _valid_boxes(conn, boxes: list[ToolBox], rejects) -> list[ToolBox]:
    """Boxes the database accepts. Each is tried in a savepoint that is then rolled back, so the
    database's own constraints on ``annotations`` (0001_core.sql) stay visearch's one box rule;
    a refused box is a reject with the database's reason and the others go in."""
    ok = []
    for b in boxes:
        try:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO annotations (image_id, bbox_x, bbox_y, bbox_w, bbox_h, source)"
                    " VALUES (%s, %s, %s, %s, %s, 'visearch-probe')", (b.image_id, *b.bbox_xywh))
                raise _Probe
        except _Probe:
            ok.append(b)
        except (psycopg.errors.CheckViolation, psycopg.errors.NumericValueOutOfRange) as exc:
            reason = exc.diag.message_primary or str(exc)
            rejects.append((b.task_id, f"box {b.external_id}: {reason}"))
    return ok


def _write_boxes(conn, tool, project_id, boxes, concept_ids, image_ids, report) -> None:
    counts = conn.execute(read_sql("integrations/upsert_boxes.sql"), {
        "source": tool.source,
        "image_ids": [b.image_id for b in boxes],
        "concept_ids": [concept_ids[b.concept] for b in boxes],
        "x": [b.bbox_xywh[0] for b in boxes], "y": [b.bbox_xywh[1] for b in boxes],
        "w": [b.bbox_xywh[2] for b in boxes], "h": [b.bbox_xywh[3] for b in boxes],
        "external_ids": [b.external_id for b in boxes],
        "metadata": [json.dumps({"tool_project": project_id, "tool_task": b.task_id, **b.metadata}) for b in boxes],
    }).fetchone()
    report.boxes_added += int(counts[0])
    report.boxes_changed += int(counts[1])
    deleted = conn.execute(read_sql("integrations/delete_stale_boxes.sql"), {
        "source": tool.source, "project": str(project_id), "image_ids": image_ids,
        "keep": [b.external_id for b in boxes],
    }).fetchall()
    report.boxes_deleted += len(deleted)


def _write_labels(conn, tool, labels, concept_ids, image_ids, report) -> None:
    pairs = sorted({(lab.image_id, concept_ids[lab.concept]) for lab in labels})
    params = {"source": tool.source, "image_ids": image_ids,
              "label_images": [p[0] for p in pairs], "label_concepts": [p[1] for p in pairs]}
    report.labels_added += len(conn.execute(read_sql("integrations/insert_labels.sql"), params).fetchall())
    report.labels_deleted += len(conn.execute(read_sql("integrations/delete_stale_labels.sql"), params).fetchall())


def follow(
    db: Database,
    tool: AnnotationTool,
    settings: Settings,
    *,
    projects: Iterable[int] | None = None,
    link_new_projects: bool = False,
    resync_seconds: float = 300.0,
    stop: threading.Event | None = None,
    on_sync: Callable[[SyncReport], None] | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Keep linked projects in sync until ``stop`` is set: LISTEN on :data:`NOTIFY_CHANNEL` and
    re-sync each project a notification names, plus every project every ``resync_seconds``
    (a safety net: a notification is lost if this process is down when the tool commits).

    Args:
        projects: only these project ids (default: every project linked to ``tool``, also
            those linked later).
        link_new_projects: link a project of the tool that is not linked yet (default dataset
            name) as soon as it notifies (``visearch connect label-studio --all``).
        on_sync: called with each sync's report (the CLI prints it).
        ready: set once listening, after the first full sync (tests and benchmarks wait on it).
    """
    stop = stop or threading.Event()
    only = set(projects) if projects is not None else None

    def wanted() -> list[int]:
        ids = linked_projects(db, tool)
        return [p for p in ids if only is None or p in only]

    def run(project_id: int) -> None:
        try:
            report = sync_project(db, tool, project_id, settings)
        except (psycopg.Error, NotFoundError, InvalidRequestError, OSError) as exc:
            log.warning("sync of %s project %s failed: %s", tool.name, project_id, exc)
            return
        if on_sync is not None:
            on_sync(report)

    listener = db.connect(autocommit=True)
    try:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        for project_id in wanted():
            run(project_id)
        if ready is not None:
            ready.set()
        next_full = time.monotonic() + resync_seconds
        while not stop.is_set():
            pending: set[int] = set()
            for note in listener.notifies(timeout=0.5, stop_after=1):
                pending |= _parse_payload(tool, note.payload)
            if pending:  # gather what else was committed meanwhile: one sync per project
                for note in listener.notifies(timeout=0.0):
                    pending |= _parse_payload(tool, note.payload)
            linked = set(linked_projects(db, tool)) if pending else set()
            for project_id in sorted(pending):
                if only is not None and project_id not in only:
                    continue
                if project_id not in linked:
                    if not link_new_projects:
                        continue
                    try:
                        link_project(db, tool, project_id)
                    except (NotFoundError, InvalidRequestError) as exc:
                        log.warning("cannot link %s project %s: %s", tool.name, project_id, exc)
                        continue
                run(project_id)
            if time.monotonic() >= next_full:
                for project_id in wanted():
                    run(project_id)
                next_full = time.monotonic() + resync_seconds
    finally:
        listener.close()


def _parse_payload(tool: AnnotationTool, payload: str) -> set[int]:
    name, _, project = payload.rpartition(":")
    if name != tool.name or not project.isdigit():
        return set()
    return {int(project)}
