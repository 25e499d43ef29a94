"""Click commands for annotation tools: ``connect label-studio`` and ``collections send``.

Registered on the main ``visearch`` group at the bottom of :mod:`visearch.cli`.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from visearch.cli_context import CliContext, fail, pass_ctx

log = logging.getLogger(__name__)


def _label_studio(schema, media_root, local_files_root, media_roots=(), url=None, token=None):
    from visearch.integrations.label_studio import LabelStudio, LabelStudioSettings

    overrides = {k: v for k, v in {"schema_name": schema, "media_root": media_root,
                                   "local_files_root": local_files_root, "url": url, "token": token}.items()
                 if v is not None}
    settings = LabelStudioSettings(**overrides)
    return LabelStudio(settings, media_roots=media_roots)


def _ls_options(f):
    f = click.option("--schema", help="Schema of Label Studio's tables in this database "
                                      "[env VISEARCH_LABEL_STUDIO_SCHEMA; default label_studio].")(f)
    f = click.option("--media-root", type=click.Path(file_okay=False, path_type=Path),
                     help="Label Studio's MEDIA_ROOT (<its data dir>/media), for uploaded files "
                          "[env VISEARCH_LABEL_STUDIO_MEDIA_ROOT].")(f)
    f = click.option("--local-files-root", type=click.Path(file_okay=False, path_type=Path),
                     help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT [env VISEARCH_LABEL_STUDIO_LOCAL_FILES_ROOT].")(f)
    return f


@click.group()
def connect():
    """Link an annotation tool's projects to visearch, live."""


@connect.command("label-studio")
@click.option("--project", "projects", type=click.IntRange(min=1), multiple=True,
              help="Label Studio project id (repeatable).")
@click.option("--all", "all_projects", is_flag=True,
              help="Every project, also those created later (each to dataset label-studio-<id>).")
@click.option("-d", "--dataset", help="Dataset for the project's images (default label-studio-<id>; one --project only).")
@click.option("--media-dir", "media_dirs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Another folder task files may be read from (repeatable).")
@_ls_options
@click.option("--once", is_flag=True, help="Sync once and exit (default: keep following changes).")
@click.option("--resync", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds between full re-syncs while following (notifications do the live work).")
@pass_ctx
def connect_label_studio(obj: CliContext, projects, all_projects, dataset, media_dirs, schema, media_root,
                         local_files_root, once, resync):
    """Label Studio on this database -> visearch: tasks become images, rectangle labels boxes
    (COCO pixels), labels concepts, choices image labels; edits and deletes follow live.

    Label Studio must run against visearch's database with its tables in their own schema
    (PGOPTIONS='-c search_path=label_studio'). visearch adds notify-only triggers to its task
    and annotation tables and never writes them. Run `visearch worker` beside this command so
    new and moved boxes are embedded within seconds.
    """
    from visearch.errors import VisearchError
    from visearch.integrations.sync import follow, link_project, sync_project

    if not projects and not all_projects:
        raise click.UsageError("give --project ID (repeatable) or --all")
    if dataset and (all_projects or len(projects) != 1):
        raise click.UsageError("--dataset goes with exactly one --project")
    tool = _label_studio(schema, media_root, local_files_root, media_dirs)
    try:
        if all_projects:
            with obj.db.connect() as conn:
                tool.check_tables(conn)
                projects = tool.projects(conn)
        for project_id in projects:
            name = link_project(obj.db, tool, project_id, dataset)
            click.echo(f"linked Label Studio project {project_id} to dataset {name!r}")
            if once:
                click.echo(sync_project(obj.db, tool, project_id, obj.settings).summary())
    except VisearchError as exc:
        fail(exc)
    if once:
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo("following changes (Ctrl-C to stop)")
    follow(obj.db, tool, obj.settings, projects=None if all_projects else projects,
           link_new_projects=all_projects, resync_seconds=resync, stop=stop,
           on_sync=lambda r: click.echo(r.summary()) if _changed(r) else None)


def _changed(report) -> bool:
    return any((report.images_added, report.tasks_linked, report.tasks_unlinked, report.boxes_added,
                report.boxes_changed, report.boxes_deleted, report.labels_added, report.labels_deleted))


@click.group()
def collections():
    """Collections (kept searches) beyond the HTTP API."""


@collections.command("send")
@click.argument("collection")
@click.option("--label-studio-project", "project_id", type=click.IntRange(min=1), required=True,
              help="Label Studio project to create the tasks in.")
@click.option("--owner", default="anonymous", show_default=True,
              help="Owner of the collection (the API key name that made it).")
@click.option("--url", help="Label Studio URL [env VISEARCH_LABEL_STUDIO_URL].")
@click.option("--token", help="Label Studio API token [env VISEARCH_LABEL_STUDIO_TOKEN].")
@_ls_options
@pass_ctx
def collections_send(obj: CliContext, collection, project_id, owner, url, token, schema, media_root,
                     local_files_root):
    """Make each image of COLLECTION (an id or a saved collection's name) a task in a Label
    Studio project, with visearch's boxes as predictions; their annotations come back through
    `visearch connect label-studio`."""
    from visearch.errors import VisearchError
    from visearch.integrations.send import find_collection, send_collection

    tool = _label_studio(schema, media_root, local_files_root, url=url, token=token)
    try:
        report, linked = send_collection(obj.db, tool, obj.settings, owner,
                                         find_collection(obj.db, owner, collection), project_id)
    except VisearchError as exc:
        fail(exc)
    click.echo(f"{report.tasks_created} tasks created in Label Studio project {project_id} with "
               f"{report.predictions} predicted boxes ({report.boxes_left_out} boxes left out: concept not a "
               f"label of the project); " + ("linked: annotations come back" if linked else
                                            "not linked: Label Studio's tables are not in this database"))


COMMANDS = (connect, collections)
