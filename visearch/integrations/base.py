"""The adapter interface every annotation tool implements, and what it returns.

An adapter knows one tool's tables and API; the sync engine (:mod:`visearch.integrations.sync`)
does the rest (linking, importing files as images, writing boxes and labels, deleting what the
tool deleted, listening). Adding a tool (CVAT, see README "Annotation tools") is one new adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import psycopg

from visearch.errors import VisearchError


class ToolError(VisearchError):
    """The annotation tool could not be reached or refused a request (HTTP API: 502)."""


@dataclass(frozen=True)
class ToolTask:
    """One task of a tool project, resolved to what visearch needs to make it an image.

    Exactly one of ``image_id`` (a task visearch created from its own image), ``path`` (a local
    file inside the media roots) or ``reject`` (why it cannot be taken) is set.
    """

    task_id: int
    image_id: int | None = None
    path: Path | None = None
    reject: str | None = None


@dataclass(frozen=True)
class ToolBox:
    """A box drawn in the tool, already in visearch's terms.

    ``bbox_xywh`` is COCO [x, y, width, height] in pixels of the visearch image (float64);
    ``external_id`` is unique per tool (Label Studio: ``"<annotation id>/<result id>"``).
    """

    task_id: int
    image_id: int
    external_id: str
    concept: str
    bbox_xywh: tuple[float, float, float, float]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolImageLabel:
    """An image-level label chosen in the tool (Label Studio ``choices``)."""

    task_id: int
    image_id: int
    concept: str


@dataclass
class SyncReport:
    """What one sync of a project changed in visearch."""

    tool: str
    project_id: int
    dataset: str
    tasks: int = 0  # tasks in the tool project
    images_added: int = 0  # new visearch images made from task files
    tasks_linked: int = 0  # tasks newly linked to an image
    tasks_unlinked: int = 0  # links dropped because the task was deleted in the tool
    boxes_added: int = 0
    boxes_changed: int = 0  # box moved or relabelled (moved boxes are re-embedded)
    boxes_deleted: int = 0
    labels_added: int = 0
    labels_deleted: int = 0
    rejects: list[tuple[int | None, str]] = field(default_factory=list)  # (task id, why)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the command line."""
        text = (
            f"{self.tool} project {self.project_id} -> dataset {self.dataset!r}: {self.tasks} tasks "
            f"({self.images_added} new images, {self.tasks_linked} linked, {self.tasks_unlinked} unlinked); "
            f"boxes +{self.boxes_added} ~{self.boxes_changed} -{self.boxes_deleted}; "
            f"labels +{self.labels_added} -{self.labels_deleted}; {self.seconds:.2f} s"
        )
        if self.rejects:
            text += f"; {len(self.rejects)} not taken (first: task {self.rejects[0][0]}: {self.rejects[0][1]})"
        return text


@dataclass
class SendReport:
    """What sending images to a tool project created there."""

    tool: str
    project_id: int
    tasks_created: int
    task_ids: list[int]
    predictions: int  # boxes sent as pre-annotations
    boxes_left_out: int  # boxes whose concept is not a label of the project's config


@dataclass(frozen=True)
class SendImage:
    """An image to send, with the boxes to pre-annotate it with (COCO pixels)."""

    image_id: int
    width: int
    height: int
    source_uri: str | None
    boxes: Sequence[tuple[int, str | None, tuple[float, float, float, float]]]  # (annotation id, concept, bbox)


class AnnotationTool(Protocol):
    """One annotation tool whose data lives in PostgreSQL."""

    #: ``tool_projects.tool`` and the NOTIFY payload prefix, e.g. ``"label-studio"``.
    name: str
    #: ``annotations.source`` / ``image_labels.source`` of what is synced from the tool.
    source: str
    #: The PostgreSQL schema that holds the tool's tables.
    schema: str

    def check_tables(self, conn: psycopg.Connection) -> None:
        """Raise :class:`visearch.errors.InvalidRequestError` naming what is missing when the
        tool's tables are not in :attr:`schema` of this database."""

    def install_triggers(self, conn: psycopg.Connection) -> None:
        """Add (idempotently) the notify-only triggers on the tool's tables."""

    def projects(self, conn: psycopg.Connection) -> list[int]:
        """Every project id in the tool."""

    def tasks(self, conn: psycopg.Connection, project_id: int) -> list[ToolTask]:
        """The project's current tasks, each resolved to an image id, a file or a reject."""

    def results(
        self, conn: psycopg.Connection, project_id: int
    ) -> tuple[list[ToolBox], list[ToolImageLabel], list[tuple[int | None, str]]]:
        """The project's current boxes and image labels on linked tasks, and what was refused."""

    def send_images(self, project_id: int, images: Sequence[SendImage]) -> SendReport:
        """Create one task per image in the tool project (REST API), boxes as predictions."""
