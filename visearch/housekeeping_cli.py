"""Click commands for housekeeping: ``visearch dataset rename|delete`` and ``visearch image
find|delete`` (registered by :mod:`visearch.cli`). Each calls :mod:`visearch.housekeeping`."""

from __future__ import annotations

import click

from visearch.cli_context import CliContext, fail, pass_ctx

#: Where `visearch serve` listens by default; `image find` prints console links under it.
DEFAULT_CONSOLE = "http://127.0.0.1:8000"


def _dataset_id(obj: CliContext, name: str) -> int:
    from visearch.admin import dataset_id
    from visearch.errors import VisearchError

    try:
        return dataset_id(obj.db, name)
    except VisearchError as exc:
        fail(exc)


@click.command("rename")
@click.argument("name")
@click.argument("new_name")
@pass_ctx
def dataset_rename(obj: CliContext, name, new_name):
    """Rename dataset NAME to NEW_NAME."""
    from visearch.errors import VisearchError
    from visearch.admin import rename_dataset

    try:
        rename_dataset(obj.db, _dataset_id(obj, name), new_name)
    except VisearchError as exc:
        fail(exc)
    click.echo(f"dataset {name!r} is now {new_name.strip()!r}")


@click.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def dataset_delete(obj: CliContext, name, yes):
    """Delete dataset NAME with its images, boxes, labels, captions, vectors and queue rows."""
    from visearch.errors import VisearchError
    from visearch.admin import delete_dataset

    dataset_id = _dataset_id(obj, name)
    if not yes:
        click.confirm(f"Delete dataset {name!r} and everything in it? This cannot be undone", abort=True)
    try:
        d = delete_dataset(obj.db, dataset_id)
    except VisearchError as exc:
        fail(exc)
    click.echo(f"deleted dataset {d.name!r}: {d.images} images, {d.annotations} boxes, {d.vectors} vectors, "
               f"{d.queue_rows} queue rows, {d.collection_items} collection items")


@click.group()
def image():
    """Images: find them by file name or external id, delete them."""


@image.command("find")
@click.argument("term")
@click.option("--prefix", is_flag=True, help="Match file names and external ids starting with TERM.")
@click.option("-d", "--dataset", help="Only this dataset.")
@click.option("--console", "console_url", default=DEFAULT_CONSOLE, show_default=True,
              help="Base URL of `visearch serve`, for the links printed.")
@pass_ctx
def image_find(obj: CliContext, term, prefix, dataset, console_url):
    """Find images whose file name or external id (e.g. the COCO image id) is TERM.

    Prints each image's id, dataset, file, the path of its file when it came from one, and a
    link that opens it in the web console (`visearch serve`).
    """
    from tabulate import tabulate

    from visearch.errors import VisearchError
    from visearch.housekeeping import find_images
    from visearch.ingest.files import path_from_source_uri

    try:
        found = find_images(obj.db, term, prefix=prefix,
                            dataset_id=_dataset_id(obj, dataset) if dataset else None)
    except VisearchError as exc:
        fail(exc)
    if not found:
        raise click.ClickException(f"no image has the file name or external id {term!r}")
    base = console_url.rstrip("/")
    rows = []
    for m in found:
        try:
            path = str(path_from_source_uri(m.source_uri)) if m.source_uri else ""
        except ValueError:
            path = m.source_uri or ""
        rows.append((m.id, m.dataset, m.file_name, m.external_id, f"{m.width}x{m.height}", path,
                     f"{base}/#image={m.id}"))
    click.echo(tabulate(rows, headers=["image", "dataset", "file", "external id", "size", "path", "open"]))


@image.command("delete")
@click.argument("image_ids", nargs=-1, type=int, required=True)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def image_delete(obj: CliContext, image_ids, yes):
    """Delete images by id, with their boxes, labels, captions, vectors and queue rows."""
    from visearch.errors import VisearchError
    from visearch.housekeeping import delete_images

    if not yes:
        click.confirm(f"Delete {len(image_ids)} image(s)? This cannot be undone", abort=True)
    try:
        deleted = delete_images(obj.db, image_ids)
    except VisearchError as exc:
        fail(exc)
    missing = sorted(set(image_ids) - set(deleted))
    click.echo(f"deleted {len(deleted)} image(s)" + (f"; unknown ids: {missing}" if missing else ""))


def register(cli: click.Group) -> None:
    """Add these commands to the ``visearch`` group (``dataset`` comes from the worker CLI)."""
    dataset = cli.commands["dataset"]
    dataset.add_command(dataset_rename)
    dataset.add_command(dataset_delete)
    cli.add_command(image)
