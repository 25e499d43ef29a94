"""Annotation tools that keep their data in PostgreSQL, linked to visearch both ways.

* **Into visearch, live** (:mod:`visearch.integrations.sync`): a tool's project is linked to a
  dataset (``tool_projects``); the tool's tasks become images (``tool_tasks``), its boxes
  become ``annotations`` (COCO pixels) and its image-level choices ``image_labels``. Triggers on
  the tool's tables only ``NOTIFY visearch_annotation_tool``; :func:`~visearch.integrations.sync.follow`
  listens and re-syncs the project, and visearch's own triggers queue changed boxes for the
  embedding worker. visearch never writes the tool's tables.
* **Back into the tool** (:meth:`AnnotationTool.send_images`): images (a collection) become
  tasks in a tool project through the tool's REST API, with visearch's boxes as predictions,
  linked so that their annotations come back through the live path.

Each tool is one :class:`AnnotationTool` adapter (Label Studio:
:class:`visearch.integrations.label_studio.LabelStudio`); the sync engine is shared.
"""

from visearch.integrations.base import (
    AnnotationTool,
    SendReport,
    SyncReport,
    ToolBox,
    ToolError,
    ToolImageLabel,
    ToolTask,
)

__all__ = ["AnnotationTool", "SendReport", "SyncReport", "ToolBox", "ToolError", "ToolImageLabel", "ToolTask"]
