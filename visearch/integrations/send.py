"""Sending visearch's images back to an annotation tool as labelling work.

:func:`send_collection` turns a collection's images into tasks of a tool project (through the
tool's REST API), with visearch's boxes as predictions, and links the project so that the
annotations made on those tasks come back through the live sync
(:mod:`visearch.integrations.sync`) onto the very images they were made from.
"""

from __future__ import annotations

import logging

from visearch import collections as collections_service
from visearch.config import Settings
from visearch.db.database import Database
from visearch.errors import InvalidRequestError, NotFoundError
from visearch.integrations.base import AnnotationTool, SendImage, SendReport
from visearch.integrations.sync import link_project, linked_projects, sync_project
from visearch.resources import read_sql

log = logging.getLogger(__name__)


def find_collection(db: Database, owner: str, ref: str) -> int:
    """The id of ``owner``'s collection ``ref`` (an id, or a saved collection's name).

    Raises:
        NotFoundError: no such collection of this owner.
    """
    if ref.isdigit():
        return collections_service.get_collection(db, owner, int(ref)).id
    for c in collections_service.list_collections(db, owner, saved=True):
        if c.name == ref:
            return c.id
    raise NotFoundError(f"{owner} has no saved collection named {ref!r}")


def send_collection(
    db: Database, tool: AnnotationTool, settings: Settings, owner: str, collection_id: int, project_id: int
) -> tuple[SendReport, bool]:
    """Make each image of ``owner``'s collection a task in ``tool`` project ``project_id``.

    Images mode sends every box of each image as a prediction; objects mode only the
    collection's boxes. Boxes whose concept is not a label of the project are left out (and
    counted). Each task carries its visearch image id, so when the tool's tables are in this
    database the project is linked (if it was not) and synced at once: the new tasks map to
    their images, and annotations made on them later come back onto those images.

    Returns:
        The tool's report, and whether the project is linked for the way back.

    Raises:
        NotFoundError: no such collection (of this owner) or tool project.
        InvalidRequestError: the tool is not configured, or refused the tasks.
    """
    collection = collections_service.get_collection(db, owner, collection_id)
    with db.connect() as conn:
        rows = conn.execute(read_sql("integrations/collection_images.sql"),
                            {"collection_id": collection.id, "mode": collection.mode}).fetchall()
    images = [
        SendImage(image_id=int(i), width=int(w), height=int(h), source_uri=uri,
                  boxes=[(int(b[0]), b[1], (float(b[2]), float(b[3]), float(b[4]), float(b[5]))) for b in boxes])
        for i, w, h, uri, boxes in rows
    ]
    report = tool.send_images(project_id, images)
    linked = project_id in linked_projects(db, tool)
    if not linked:
        try:
            link_project(db, tool, project_id)
            linked = True
        except (InvalidRequestError, NotFoundError) as exc:  # the tool's tables are elsewhere
            log.warning("tasks sent, but %s project %s is not linked for the way back: %s", tool.name, project_id, exc)
    if linked:
        sync_project(db, tool, project_id, settings)
    return report, linked
