"""The Label Studio adapter: its tables (read only) into visearch's terms, and tasks back.

Label Studio (https://labelstud.io, Django) keeps a project's tasks in ``task`` (``data``
jsonb: ``{"image": "/data/upload/3/ab12-dog.jpg"}``), annotations in ``task_completion``
(``result`` jsonb: a list of regions) and the labeling config (XML) in ``project``. A
``rectanglelabels`` region gives ``x, y, width, height`` in **percent of the image size**
(0-100, top-left origin) and ``rotation`` in degrees clockwise around the top-left corner
(Label Studio docs, "Export formats" / "RectangleLabels"); visearch stores COCO pixels:
``x_px = x / 100 * image_width`` (``images.width``, after EXIF orientation, which is what the
browser shows). Only unrotated boxes map to COCO; rotated ones are reported, not approximated.
``choices`` regions become image-level labels.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, unquote, urlparse

import psycopg
from psycopg import sql
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from visearch.errors import InvalidRequestError, NotFoundError
from visearch.ingest.files import path_from_source_uri
from visearch.integrations.base import SendImage, SendReport, ToolBox, ToolError, ToolImageLabel, ToolTask
from visearch.resources import read_sql

#: ``task.data`` key that links a task visearch created to the image it was made from.
IMAGE_ID_KEY = "visearch_image_id"
#: Rotations smaller than this (degrees) count as unrotated (float noise from the editor).
_ROTATION_EPSILON = 1e-6


class LabelStudioSettings(BaseSettings):
    """Where Label Studio is, from ``VISEARCH_LABEL_STUDIO_*`` environment variables or flags."""

    model_config = SettingsConfigDict(env_prefix="VISEARCH_LABEL_STUDIO_", extra="ignore", populate_by_name=True)

    #: Schema of Label Studio's tables in visearch's database (PGOPTIONS search_path of LS).
    schema_name: str = Field(default="label_studio", validation_alias="VISEARCH_LABEL_STUDIO_SCHEMA")
    #: Base URL of its web app / REST API, for sending tasks back.
    url: str | None = None
    #: An API token of a Label Studio user (Account & Settings), for sending tasks back.
    token: str | None = Field(default=None, repr=False)
    #: Its MEDIA_ROOT (``<BASE_DATA_DIR>/media``): ``/data/upload/...`` files are under it.
    media_root: Path | None = None
    #: Its LOCAL_FILES_DOCUMENT_ROOT: ``/data/local-files/?d=...`` files are under it.
    local_files_root: Path | None = None


@dataclass
class LabelConfig:
    """What visearch needs from a project's labeling config (XML)."""

    image_name: str | None = None  # <Image name="...">
    image_key: str | None = None  # its value="$key": the task.data key holding the image
    rect_name: str | None = None  # <RectangleLabels name="..." toName="...">
    labels: list[str] = field(default_factory=list)  # its <Label value="..."> children

    @classmethod
    def parse(cls, xml: str | None) -> "LabelConfig":
        """Parse a Label Studio labeling config; unknown tags are ignored, bad XML gives an
        empty config (tasks then fall back to the ``image`` key)."""
        config = cls()
        try:
            root = ET.fromstring(xml or "<View/>")
        except ET.ParseError:
            return config
        for el in root.iter():
            if el.tag == "Image" and config.image_name is None:
                config.image_name = el.get("name")
                value = el.get("value") or ""
                config.image_key = value[1:] if value.startswith("$") else None
            elif el.tag == "RectangleLabels" and config.rect_name is None:
                config.rect_name = el.get("name")
                config.labels = [lab.get("value") for lab in el.iter("Label") if lab.get("value")]
        return config


class LabelStudio:
    """:class:`visearch.integrations.AnnotationTool` for Label Studio on the same database."""

    name = "label-studio"
    source = "label-studio"

    def __init__(self, settings: LabelStudioSettings | None = None, *, media_roots: Sequence[Path] = ()):
        """
        Args:
            settings: where Label Studio's tables, files and API are (default: environment).
            media_roots: further folders task files may be read from (files elsewhere are
                refused: a task's path is data typed by any Label Studio user).
        """
        self.settings = settings or LabelStudioSettings()
        self.schema = self.settings.schema_name
        roots = [self.settings.media_root, self.settings.local_files_root, *media_roots]
        self.media_roots = [Path(r).resolve() for r in roots if r is not None]

    # -- reading Label Studio's tables -------------------------------------------------------

    def _sql(self, name: str) -> sql.Composed:
        return sql.SQL(read_sql(f"integrations/label_studio/{name}")).format(schema=sql.Identifier(self.schema))

    def check_tables(self, conn: psycopg.Connection) -> None:
        missing = [t for t in ("project", "task", "task_completion")
                   if conn.execute("SELECT to_regclass(%s)", (f'"{self.schema}".{t}',)).fetchone()[0] is None]
        if missing:
            raise InvalidRequestError(
                f"Label Studio's tables {', '.join(missing)} are not in schema {self.schema!r} of this "
                "database. Run Label Studio against this database with PGOPTIONS='-c search_path="
                f"{self.schema}' (see README, Annotation tools), or set VISEARCH_LABEL_STUDIO_SCHEMA.")

    def install_triggers(self, conn: psycopg.Connection) -> None:
        conn.execute(self._sql("install_triggers.sql"))

    def projects(self, conn: psycopg.Connection) -> list[int]:
        query = sql.SQL("SELECT id FROM {}.project ORDER BY id").format(sql.Identifier(self.schema))
        return [int(r[0]) for r in conn.execute(query)]

    def tasks(self, conn: psycopg.Connection, project_id: int) -> list[ToolTask]:
        out = []
        config: LabelConfig | None = None
        for task_id, data, label_config in conn.execute(self._sql("tasks.sql"), {"project": project_id}):
            if config is None:
                config = LabelConfig.parse(label_config)
            out.append(self._resolve_task(int(task_id), data if isinstance(data, dict) else {}, config))
        return out

    def _resolve_task(self, task_id: int, data: dict[str, Any], config: LabelConfig) -> ToolTask:
        linked = data.get(IMAGE_ID_KEY)
        if isinstance(linked, int) and not isinstance(linked, bool) and linked > 0:
            return ToolTask(task_id, image_id=linked)
        key = config.image_key or "image"
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            return ToolTask(task_id, reject=f"task data has no image under {key!r}")
        path = self.resolve_file(value.strip())
        if isinstance(path, str):
            return ToolTask(task_id, reject=path)
        return ToolTask(task_id, path=path)

    def resolve_file(self, value: str) -> Path | str:
        """The local file a task's image value names, or why it cannot be read.

        ``/data/upload/<rest>`` -> ``media_root/upload/<rest>``; ``/data/local-files/?d=<rel>``
        -> ``local_files_root/<rel>``; ``file://`` URIs and absolute paths as they are. The
        file must lie inside the media roots (after resolving ``..`` and symlinks). Remote
        URLs are not fetched.
        """
        parsed = urlparse(value)
        path_part = unquote(parsed.path)
        if parsed.scheme in ("", "http", "https") and path_part.startswith("/data/upload/"):
            if self.settings.media_root is None:
                return "uploaded file, but Label Studio's media root is not configured (VISEARCH_LABEL_STUDIO_MEDIA_ROOT)"
            candidate = Path(self.settings.media_root) / "upload" / path_part[len("/data/upload/"):]
        elif parsed.scheme in ("", "http", "https") and path_part.rstrip("/") == "/data/local-files":
            rel = parse_qs(parsed.query).get("d", [""])[0]
            if self.settings.local_files_root is None:
                return "local file, but Label Studio's local files root is not configured (VISEARCH_LABEL_STUDIO_LOCAL_FILES_ROOT)"
            candidate = Path(self.settings.local_files_root) / rel
        elif parsed.scheme == "file":
            candidate = path_from_source_uri(value)
        elif parsed.scheme == "" and value.startswith("/"):
            candidate = Path(value)
        else:
            return f"{value[:200]!r} is not a file visearch can read (remote URLs are not fetched)"
        resolved = candidate.resolve()
        if not any(resolved.is_relative_to(root) for root in self.media_roots):
            return f"{value[:200]!r} lies outside the media roots"
        if not resolved.is_file():
            return f"{value[:200]!r}: no such file"
        return resolved

    def results(self, conn: psycopg.Connection, project_id: int):
        boxes: list[ToolBox] = []
        labels: list[ToolImageLabel] = []
        rejects: list[tuple[int | None, str]] = []
        for annotation_id, task_id, image_id, width, height, result, n in conn.execute(
                self._sql("results.sql"), {"project": project_id}):
            value = result.get("value") or {}
            if result.get("type") == "choices":
                labels.extend(ToolImageLabel(task_id, image_id, str(c)) for c in value.get("choices") or []
                              if isinstance(c, str) and c.strip())
                continue
            region = str(result.get("id") or n)
            external_id = f"{annotation_id}/{region}"
            box = rect_to_coco(value, width, height)
            if isinstance(box, str):
                rejects.append((task_id, f"box {external_id}: {box}"))
                continue
            names = [x for x in value.get("rectanglelabels") or [] if isinstance(x, str) and x.strip()]
            if not names:
                rejects.append((task_id, f"box {external_id}: no label"))
                continue
            boxes.append(ToolBox(task_id, image_id, external_id, names[0], box,
                                 {"label_studio_annotation": annotation_id, "label_studio_region": region}))
        return boxes, labels, rejects

    # -- sending images back as tasks -----------------------------------------------------------

    def client(self):
        """A ``label_studio_sdk.LabelStudio`` client for :attr:`settings` ``url`` and ``token``.

        Raises:
            InvalidRequestError: URL or token not configured, or the SDK is not installed.
        """
        if not self.settings.url or not self.settings.token:
            raise InvalidRequestError(
                "sending to Label Studio needs its URL and an API token: set VISEARCH_LABEL_STUDIO_URL "
                "and VISEARCH_LABEL_STUDIO_TOKEN (Label Studio: Account & Settings > Access Token)")
        try:
            from label_studio_sdk import LabelStudio as SDK
        except ImportError as exc:  # an optional dependency
            raise InvalidRequestError(
                "label-studio-sdk is not installed: pip install 'visearch[label-studio]'") from exc
        return SDK(base_url=self.settings.url, api_key=self.settings.token)

    def image_url(self, image: SendImage) -> str:
        """How Label Studio should load the image: a local-files URL when the file lies under
        its LOCAL_FILES_DOCUMENT_ROOT, else visearch's own ``/v1/images/{id}/original``
        (VISEARCH_LABEL_STUDIO_IMAGE_BASE_URL, the visearch API as the annotators' browsers reach it)."""
        root = self.settings.local_files_root
        if image.source_uri and image.source_uri.startswith("file://") and root is not None:
            path = path_from_source_uri(image.source_uri).resolve()
            if path.is_relative_to(Path(root).resolve()):
                return "/data/local-files/?d=" + path.relative_to(Path(root).resolve()).as_posix()
        import os

        base = os.environ.get("VISEARCH_LABEL_STUDIO_IMAGE_BASE_URL", "").rstrip("/")
        if not base:
            raise InvalidRequestError(
                f"image {image.image_id} is not under Label Studio's local files root; set "
                "VISEARCH_LABEL_STUDIO_IMAGE_BASE_URL to the visearch API URL annotators' browsers reach "
                "(tasks then load /v1/images/{id}/original)")
        return f"{base}/v1/images/{image.image_id}/original"

    def send_images(self, project_id: int, images: Sequence[SendImage]) -> SendReport:
        client = self.client()
        try:
            project = client.projects.get(id=project_id)
        except Exception as exc:  # the SDK raises ApiError (with status_code) or httpx errors
            if getattr(exc, "status_code", None) == 404:
                raise NotFoundError(f"Label Studio has no project {project_id}") from exc
            raise ToolError(f"Label Studio at {self.settings.url} did not give project {project_id}: {exc}") from exc
        config = LabelConfig.parse(project.label_config)
        if not config.image_name or not config.image_key:
            raise InvalidRequestError(
                f"Label Studio project {project_id} has no <Image value=\"$...\"> in its labeling config")
        allowed = set(config.labels)
        tasks, predictions, left_out = [], 0, 0
        for image in images:
            result = []
            for annotation_id, concept, bbox in image.boxes:
                if config.rect_name is None or concept not in allowed:
                    left_out += 1
                    continue
                result.append(coco_to_rect(bbox, image.width, image.height, concept, config,
                                           region_id=f"visearch-{annotation_id}"))
            task: dict[str, Any] = {"data": {config.image_key: self.image_url(image), IMAGE_ID_KEY: image.image_id}}
            if result:
                task["predictions"] = [{"model_version": "visearch", "result": result}]
                predictions += len(result)
            tasks.append(task)
        if not tasks:
            return SendReport(self.name, project_id, 0, [], 0, left_out)
        try:
            response = client.projects.import_tasks(id=project_id, request=tasks, return_task_ids=True)
        except Exception as exc:
            raise ToolError(f"Label Studio refused the {len(tasks)} tasks for project {project_id}: {exc}") from exc
        task_ids = [int(t) for t in (getattr(response, "task_ids", None) or [])]
        return SendReport(self.name, project_id, len(tasks), task_ids, predictions, left_out)


def rect_to_coco(value: dict[str, Any], width: int, height: int) -> tuple[float, float, float, float] | str:
    """A ``rectanglelabels`` value (percent of the image) as COCO [x, y, w, h] pixels, clipped
    to the ``width`` x ``height`` image; or why it cannot be one (rotated, not numbers)."""
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
        rotation = float(value.get("rotation") or 0.0)
    except (KeyError, TypeError, ValueError):
        return f"not a rectangle: {str(value)[:200]}"
    if not all(math.isfinite(v) for v in (x, y, w, h, rotation)):
        return "coordinates are not finite"
    if abs(rotation % 360.0) > _ROTATION_EPSILON and abs(rotation % 360.0 - 360.0) > _ROTATION_EPSILON:
        return f"rotated by {rotation:g} degrees: visearch boxes are axis-aligned"
    x0, y0 = max(0.0, x / 100.0 * width), max(0.0, y / 100.0 * height)
    x1, y1 = min(float(width), (x + w) / 100.0 * width), min(float(height), (y + h) / 100.0 * height)
    return (x0, y0, x1 - x0, y1 - y0)


def coco_to_rect(bbox: Sequence[float], width: int, height: int, concept: str, config: LabelConfig,
                 *, region_id: str) -> dict[str, Any]:
    """A COCO pixel box as a Label Studio ``rectanglelabels`` result (the inverse of
    :func:`rect_to_coco`)."""
    x, y, w, h = (float(v) for v in bbox)
    return {
        "id": re.sub(r"[^A-Za-z0-9_-]", "_", region_id),
        "from_name": config.rect_name, "to_name": config.image_name, "type": "rectanglelabels",
        "original_width": width, "original_height": height, "image_rotation": 0,
        "value": {"x": 100.0 * x / width, "y": 100.0 * y / height, "width": 100.0 * w / width,
                  "height": 100.0 * h / height, "rotation": 0, "rectanglelabels": [concept]},
    }
