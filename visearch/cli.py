"""The ``visearch`` command line. Each command is a thin layer over a library function."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import warnings
from pathlib import Path

import click

from visearch.cli_context import CliContext, fail, model_from_command_line, pass_ctx
from visearch.config import CLIP_MODEL, Settings

warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")


# Shared by every command module (visearch/worker/cli.py, visearch/http/cli.py import it from
# there, never from here: no cycle). The old names stay for the commands below.


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--database-url", envvar="VISEARCH_DATABASE_URL", default=None,
              help="PostgreSQL (>= 14, pgvector >= 0.8) URL; unset: the embedded server.")
@click.option("--data-dir", envvar="VISEARCH_DATA_DIR", type=click.Path(path_type=Path), default=None,
              help="Where the embedded server keeps its data.")
@click.option("--model", "model", envvar="VISEARCH_MODEL", default=None,
              help=f"Embedding model: efficientnet-lite0 (default, offline) or openclip[:ARCH/PRETRAINED] (default {CLIP_MODEL}).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx, database_url, data_dir, model, verbose):
    """visearch: visual search for images and the objects inside them, in PostgreSQL."""
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides = {k: v for k, v in
                 {"database_url": database_url, "data_dir": data_dir, "model": model}.items()
                 if v is not None}
    ctx.obj = CliContext(Settings(**overrides))


@cli.group()
def db():
    """Database schema and connection."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(obj: CliContext):
    """Migrate the schema to the newest revision (also done automatically on first use)."""
    from visearch.db import migrate
    from visearch.db.database import check_server, resolve_url

    url, _ = resolve_url(obj.settings)
    check_server(url)
    try:
        click.echo(f"schema at revision {migrate.upgrade(url)}")
    except migrate.MigrationRefused as exc:
        fail(exc)


@db.command("distribute")
@click.option("--shards", default=32, show_default=True, type=click.IntRange(1, 4096),
              help="Shards per distributed table (a few per worker core).")
@pass_ctx
def db_distribute(obj: CliContext, shards: int):
    """Distribute the schema over a Citus cluster (run on the coordinator, workers added).

    Big tables are sharded on the image id and co-located; small ones become reference tables;
    the embedding queue stays on the coordinator. See README "Scaling"."""
    from visearch.db.citus import CitusError, distribute

    try:
        placed = distribute(obj.db.url, shard_count=shards)
    except CitusError as exc:
        fail(exc)
    for p in placed:
        where = f"{p.kind} on {p.column}, colocation {p.colocation}" if p.column else p.kind
        click.echo(f"{p.table:20} {where}, {p.shards} shard(s)")


@db.command("url")
@pass_ctx
def db_url(obj: CliContext):
    """Print the libpq URL of the database (for psql and analysts' tools). The embedded server
    stops when the last visearch process exits: run `visearch db start` first (or `db shell`)."""
    click.echo(obj.db.url)


@cli.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("-d", "--dataset", required=True, help="Dataset to add to (created if missing).")
@click.option("--coco", "instances", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO instances JSON: its images (in PATH), categories and boxes.")
@click.option("--captions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO captions JSON for images in PATH.")
@click.option("--labels-from-folders", is_flag=True, help="Label each image with its folder's name.")
@click.option("--reference-only", is_flag=True, help="Store the file path, not the bytes.")
@click.option("--workers", default=4, show_default=True, help="Decode threads.")
@pass_ctx
def ingest(obj: CliContext, path, dataset, instances, captions, labels_from_folders, reference_only, workers):
    """Add images from PATH (a folder, recursively; or COCO's image folder) to a dataset.

    Idempotent: files already in the dataset (same sha256) are not added again. Corrupt,
    truncated, empty, unsupported or oversized files are skipped and listed with the reason.
    """
    from visearch.ingest import ingest_coco, ingest_folder

    store = not reference_only and obj.settings.store_image_bytes
    if instances or captions:
        report = ingest_coco(obj.db, dataset, path, instances, captions, store_bytes=store,
                             max_pixels=obj.settings.max_image_pixels, workers=workers)
    else:
        report = ingest_folder(obj.db, dataset, path, store_bytes=store,
                               labels_from_folders=labels_from_folders,
                               max_pixels=obj.settings.max_image_pixels, workers=workers)
    click.echo(report.summary())


@cli.command()
@click.option("-d", "--dataset", "datasets", multiple=True, help="Only these datasets (repeatable).")
@click.option("--batch-size", type=int, default=None, help="Images per forward pass.")
@click.option("--workers", "num_workers", type=int, default=None, help="Decode processes.")
@click.option("--bulk", is_flag=True,
              help="A big first load: drop the model's HNSW index and build it after (much faster than "
                   "inserting into it; searches of that model scan exactly meanwhile).")
@pass_ctx
def embed(obj: CliContext, datasets, batch_size, num_workers, bulk):
    """Embed every image and box that has no vector yet (or changed since), for every active model.

    Models: --model if typed, else every active model, else (a new database) VISEARCH_MODEL.
    Also builds any HNSW index left missing (e.g. by a bulk load that was killed).
    """
    from visearch.admin import dataset_by_name, models_to_embed
    from visearch.embed import embed_pending
    from visearch.embedding import load_model

    try:
        dataset_ids = None
        if datasets:
            found = [dataset_by_name(obj.db, name) for name in datasets]
            disabled = [d.name for d in found if not d.search_enabled]
            if disabled:
                raise click.UsageError(f"AI search is disabled for {', '.join(map(repr, disabled))}; "
                                       "`visearch dataset enable NAME` first")
            dataset_ids = [d.id for d in found]
        with obj.db.pooled() as conn:
            pinned = model_from_command_line()
            specs = models_to_embed(conn, pinned=[pinned] if pinned else [], default=obj.settings.model)
        models = [load_model(spec, device=obj.settings.device) for spec in specs]
    except click.UsageError:
        raise
    except Exception as exc:  # model weights missing, unknown dataset: say so plainly
        fail(exc)
    if not models:
        click.echo("no active model: `visearch model activate NAME` or `visearch --model SPEC embed`")
    for model in models:
        report = embed_pending(obj.db, model, dataset_ids=dataset_ids, bulk=bulk,
                               max_pixels=obj.settings.max_image_pixels, media_roots=obj.settings.media_roots,
                               batch_size=batch_size or obj.settings.batch_size, num_workers=num_workers)
        click.echo(report.summary())


def _parse_box(value: str | None):
    if value is None:
        return None
    try:
        box = tuple(float(v) for v in value.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise click.BadParameter("expected x,y,width,height in pixels, e.g. 10,20,100,80")
    return box


def _parse_metadata(value: str | None) -> dict:
    if value is None:
        return {}
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter('a JSON object, e.g. \'{"license": 3}\'')
    return data


# Each option has the name and meaning of the HTTP API's field (docs/http.md, SearchBody).
@cli.command()
@click.argument("query", required=False)
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Query by this image file.")
@click.option("--crop", help="With --image: only this box of it, x,y,width,height in pixels (crop_xywh).")
@click.option("--image-id", "image_ids", type=int, multiple=True, help="Query by stored image(s) (image_ids).")
@click.option("--annotation-id", type=int, help="Query by a stored box (implies --mode objects).")
@click.option("--mode", type=click.Choice(["images", "objects"]), default=None,
              help="Return images or objects (boxes). Default: objects for --annotation-id, else images.")
@click.option("--objects", is_flag=True, help="Same as --mode objects.")
@click.option("--concept", "concepts", multiple=True, help="Required concept (tag, '#' optional); repeatable.")
@click.option("--exclude-concept", "exclude_concepts", multiple=True,
              help="Leave out images showing this concept (objects: boxes of it); repeatable.")
@click.option("-d", "--dataset", "datasets", multiple=True, help="Only these datasets.")
@click.option("--metadata", help='Images whose metadata contains this JSON object, e.g. \'{"license": 3}\'.')
@click.option("--created-from", type=click.DateTime(), help="Images created at or after (ISO date/time).")
@click.option("--created-to", type=click.DateTime(), help="Images created before (ISO date/time).")
@click.option("-k", "--limit", default=10, show_default=True)
@click.option("--offset", default=0, show_default=True, help="Skip this many of the best hits.")
@click.option("--min-score", type=float, help="Keep hits with cosine similarity >= this.")
@click.option("--max-score", type=float, help="Keep hits with cosine similarity <= this.")
@click.option("--exact/--approximate", default=None, help="Force exact or HNSW search (default: chosen per query).")
@click.option("--exclude-query-items", is_flag=True, help="With --image-id/--annotation-id: leave those items out.")
@click.option("--model", "model_name", default=None,
              help="Embedding model to search (default: the serving model; `visearch model list`).")
@click.option("--show-sql", is_flag=True, help="Also print the ranking statement, runnable as-is in psql.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--mmr", "diversity", type=click.FloatRange(0, 1), default=0.0,
              help="MMR diversity in [0, 1] (0: plain ranking).")
@click.option("--expand", type=click.IntRange(0, 100), default=0, help="Average query expansion with the top K hits.")
@click.option("--positive", "positive_ids", type=int, multiple=True, help="More like this item (Rocchio feedback).")
@click.option("--negative", "negative_ids", type=int, multiple=True, help="Less like this item.")
@pass_ctx
def search(obj: CliContext, query, image_path, crop, image_ids, annotation_id, mode, objects, concepts,
           exclude_concepts, datasets, metadata, created_from, created_to, limit, offset, min_score,
           max_score, exact, exclude_query_items, model_name, show_sql, as_json, diversity, expand,
           positive_ids, negative_ids):
    """Search images (or objects) by text, an image or a crop of it, stored ids, and #concepts.

    QUERY is free text and/or #concept terms: "a dog on a sofa", "#person #bicycle",
    "#helmet" alone ranks the concept's objects by likeness to their mean.
    """
    from datetime import timezone

    from visearch.errors import VisearchError
    from visearch.search import SearchRequest
    from visearch.search import search as run_search

    if mode is None:
        mode = "objects" if (objects or annotation_id is not None) else "images"
    elif objects and mode != "objects":
        raise click.BadParameter("--objects contradicts --mode images", param_hint="--mode")

    def _aware(value):  # naive times on the command line are UTC, as in the API's examples
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value

    req = SearchRequest(
        mode=mode, query=query, image=image_path.read_bytes() if image_path else None,
        crop_xywh=_parse_box(crop), image_ids=image_ids, annotation_id=annotation_id,
        concepts=concepts, exclude_concepts=exclude_concepts, datasets=datasets,
        metadata=_parse_metadata(metadata), created_from=_aware(created_from), created_to=_aware(created_to),
        limit=limit, offset=offset, min_score=min_score, max_score=max_score, exact=exact,
        exclude_query_items=exclude_query_items,
        # `visearch search --model M` or `visearch --model M search`; else the serving model
        model=model_name or model_from_command_line(),
    )
    from visearch.curation.refine import Refinement, refined_search

    refinement = Refinement(diversity=diversity, expand=expand, positive_ids=positive_ids, negative_ids=negative_ids)
    try:
        if refinement.active:
            result = refined_search(obj.db, req, refinement, obj.settings)
        else:
            result = run_search(obj.db, req, obj.settings, show_sql=show_sql)
    except VisearchError as exc:
        fail(exc)
    if show_sql:
        sql_text = getattr(result, "sql", None)
        click.echo(sql_text or "-- a refined search (--mmr, --expand, feedback) runs several statements; none shown")
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), indent=2, default=str))
        return
    click.echo(format_result(result))


def format_result(result) -> str:
    """A search result as a text table with a one-line header."""
    from tabulate import tabulate

    how = f"exact, {result.plan}" if result.exact else "HNSW"
    head = (f"{len(result.hits)} {result.mode} by {result.query_source} "
            f"({result.model}, {how}"
            + (f", {result.candidates} candidates)" if not result.candidates_capped else ")"))
    if result.note:
        head += f": {result.note}"
    if result.mode == "images":
        rows = [(h.score, h.image_id, h.dataset, h.file_name, f"{h.width}x{h.height}") for h in result.hits]
        cols = ["score", "image", "dataset", "file", "size"]
    else:
        rows = [(h.score, h.annotation_id, h.image_id, h.concept, ", ".join(f"{v:g}" for v in h.bbox_xywh),
                 h.dataset, h.file_name) for h in result.hits]
        cols = ["score", "annotation", "image", "concept", "bbox x,y,w,h", "dataset", "file"]
    return head + "\n" + tabulate(rows, headers=cols, floatfmt=".4f")


@cli.command()
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Your own images (a folder, or COCO's image folder with --coco).")
@click.option("--coco", "instances", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO instances JSON for --folder.")
@click.option("-d", "--dataset", default="demo", show_default=True)
@pass_ctx
def demo(obj: CliContext, folder, instances, dataset):
    """The whole job on real photos: ingest, embed every image and box, answer searches.

    Without --folder it uses the photos that ship with scikit-image (astronaut, cat, coffee,
    motorcycles, rocket, ...) with boxes drawn for this demo, so it runs on any machine offline.
    """
    from visearch.demo import run_demo

    try:
        run_demo(obj.db, obj.settings, dataset=dataset, folder=folder, instances=instances, echo=click.echo)
    except Exception as exc:
        from visearch.errors import VisearchError

        if isinstance(exc, (VisearchError, FileNotFoundError, ValueError)):
            fail(exc)
        raise


# Freshness commands (worker, status, dataset, model) live in visearch/worker/cli.py.
from visearch.worker.cli import COMMANDS as _FRESHNESS_COMMANDS  # noqa: E402

for _command in _FRESHNESS_COMMANDS:
    cli.add_command(_command)

# `visearch db start|stop|shell` (a server that stays up for analysts) live in visearch/db/server_cli.py.
from visearch.db.server_cli import db_hold, db_shell, db_start, db_stop  # noqa: E402

for _command in (db_start, db_stop, db_shell, db_hold):
    db.add_command(_command)

# The HTTP API (`visearch serve`) lives in visearch/http/cli.py.
from visearch.http.cli import serve  # noqa: E402

cli.add_command(serve)

# Annotation tools (`connect label-studio`, `collections send`) live in visearch/integrations/cli.py.
from visearch.integrations.cli import COMMANDS as _INTEGRATION_COMMANDS  # noqa: E402

for _command in _INTEGRATION_COMMANDS:
    cli.add_command(_command)

# Housekeeping (dataset rename/delete, image find/delete) lives in visearch/housekeeping_cli.py.
from visearch.housekeeping_cli import register as _register_housekeeping  # noqa: E402

_register_housekeeping(cli)

# Curation commands (sample, duplicates, suspects) live in visearch/curation/cli.py.
from visearch.curation.cli import COMMANDS as _CURATION_COMMANDS  # noqa: E402

for _command in _CURATION_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
