"""Click commands for freshness: ``worker``, ``status``, ``dataset ...``, ``model ...``.

Registered on the main ``visearch`` group at the bottom of :mod:`visearch.cli`.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import click

from visearch.cli_context import CliContext as _Context
from visearch.cli_context import fail as _fail
from visearch.cli_context import model_from_command_line, pass_ctx


@click.command()
@click.option("--interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds between scheduled passes; new rows wake the worker at once anyway.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images per forward pass.")
@click.option("--claim-size", type=click.IntRange(min=1), default=None,
              help="Items claimed at a time (default 4 x batch size).")
@click.option("--lease", "lease_seconds", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds a claim is held; a killed worker's items come back after this.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Failures before an item is given up on (with its reason).")
@click.option("--backoff", "backoff_seconds", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="First retry delay in seconds, doubled per attempt (at most an hour).")
@click.option("--slice", "slice_seconds", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="With several active models: seconds per model per pass.")
@click.option("--decode-workers", type=click.IntRange(min=0), default=None,
              help="Decode processes (default: automatic).")
@click.option("--threads", "torch_threads", type=click.IntRange(min=1), default=None,
              help="Inference threads (default: the cores divided by the live workers on this "
                   "machine, re-checked after every batch).")
@click.option("--model", "models", multiple=True,
              help="Embed only this model (repeatable). Default: every active model.")
@pass_ctx
def worker(obj: _Context, interval, batch_size, claim_size, lease_seconds, max_attempts, backoff_seconds,
           slice_seconds, decode_workers, torch_threads, models):
    """Keep embeddings fresh: embed new and changed images and boxes as they arrive.

    Embeds every active model (a model added meanwhile is picked up; VISEARCH_MODEL only names
    the model of a new database), or only --model, on a schedule and at once when rows are
    written by any client (PostgreSQL LISTEN/NOTIFY). Run as many as you like, on any machines:
    they share the queue without doing an item twice. Logs one line per batch. SIGINT/SIGTERM:
    finishes the current batch, gives back the other claims, exits 0.
    """
    from visearch.worker.scheduler import EmbeddingWorker, WorkerOptions

    worker_log = logging.getLogger("visearch.worker")
    if worker_log.getEffectiveLevel() > logging.INFO:
        worker_log.setLevel(logging.INFO)  # the per-batch lines are this command's output
    options = WorkerOptions(
        interval=interval, batch_size=batch_size or obj.settings.batch_size, claim_size=claim_size,
        lease_seconds=lease_seconds, max_attempts=max_attempts, backoff_seconds=backoff_seconds,
        slice_seconds=slice_seconds, decode_workers=decode_workers, torch_threads=torch_threads,
    )
    try:
        pinned = list(models) or ([obj.settings.model] if model_from_command_line() else [])
        EmbeddingWorker(obj.db, obj.settings, options, models=pinned).run()
    except Exception as exc:
        from visearch.embedding import ModelWeightsNotFoundError, UnknownModelError

        if isinstance(exc, (ModelWeightsNotFoundError, UnknownModelError)):
            _fail(exc)
        raise


@click.command()
@click.option("-d", "--dataset", "datasets", multiple=True, help="Only these datasets (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_ctx
def status(obj: _Context, datasets, as_json):
    """Per dataset and model: items, embedded, stale, failed (grouped by reason), rate and ETA."""
    from visearch.errors import VisearchError
    from visearch.status import collect_status, format_status

    try:
        report = collect_status(obj.db, datasets)
    except VisearchError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), indent=2, default=str))
    else:
        click.echo(format_status(report))


@click.group()
def dataset():
    """Datasets: list them, enable or disable AI search."""


@dataset.command("list")
@pass_ctx
def dataset_list(obj: _Context):
    """Datasets with their AI search flag and item counts."""
    from tabulate import tabulate

    from visearch.admin import list_datasets

    rows = [(d.name, "enabled" if d.search_enabled else "disabled", d.images, d.annotations, d.description)
            for d in list_datasets(obj.db)]
    click.echo(tabulate(rows, headers=["dataset", "AI search", "images", "objects", "description"])
               if rows else "no datasets yet: `visearch ingest PATH -d NAME`")


def _set_enabled(obj: _Context, name: str, enabled: bool) -> None:
    from visearch.admin import dataset_id, set_search_enabled
    from visearch.errors import VisearchError

    try:
        _, changed = set_search_enabled(obj.db, dataset_id(obj.db, name), enabled)
    except VisearchError as exc:
        _fail(exc)
    state = "enabled" if enabled else "disabled"
    if not changed:
        click.echo(f"AI search was already {state} for {name!r}")
    elif enabled:
        click.echo(f"AI search enabled for {name!r}: workers now embed what changed while it was off")
    else:
        click.echo(f"AI search disabled for {name!r}: left out of search and automatic embedding; "
                   "its vectors are kept and changes keep being queued")


@dataset.command("enable")
@click.argument("name")
@pass_ctx
def dataset_enable(obj: _Context, name):
    """Enable AI search for dataset NAME (searchable; kept embedded by workers)."""
    _set_enabled(obj, name, True)


@dataset.command("disable")
@click.argument("name")
@pass_ctx
def dataset_disable(obj: _Context, name):
    """Disable AI search for dataset NAME (not searched, not embedded; vectors kept)."""
    _set_enabled(obj, name, False)


@click.group()
def model():
    """Embedding models: add one (embedded in the background), list, (de)activate."""


@model.command("add")
@click.argument("spec")
@pass_ctx
def model_add(obj: _Context, spec):
    """Register and activate model SPEC; workers embed everything with it in the background.

    Searches keep using the current model for each dataset until SPEC has embedded all of it,
    then switch to SPEC by themselves (see `visearch model list`).
    """
    from visearch.admin import add_model

    try:
        row, queued = add_model(obj.db, spec, device=obj.settings.device)
    except Exception as exc:  # unknown spec, missing weights, dimension mismatch: say so plainly
        _fail(exc)
    click.echo(f"model {row.name} ({row.dim}-d, {'image+text' if row.embeds_text else 'image only'}) "
               f"active; {queued} items queued for it")


@model.command("list")
@pass_ctx
def model_list(obj: _Context):
    """Registered models: vectors, queue, and which one searches use by default."""
    from tabulate import tabulate

    from visearch.admin import list_models

    rows = [(m.name, m.dim, "yes" if m.embeds_text else "no", "yes" if m.is_active else "no",
             m.image_vectors, m.object_vectors, m.queued, m.failed, "*" if m.serving else "")
            for m in list_models(obj.db)]
    click.echo(tabulate(rows, headers=["model", "dim", "text", "active", "image vectors", "object vectors",
                                       "queued", "failed", "serving"])
               if rows else "no models yet: `visearch model add SPEC` or `visearch embed`")


def _set_active(obj: _Context, name: str, active: bool) -> None:
    from visearch.admin import model_by_name, set_model_active
    from visearch.errors import VisearchError

    try:
        changed = set_model_active(obj.db, model_by_name(obj.db, name).id, active)
    except VisearchError as exc:
        _fail(exc)
    word = "active" if active else "inactive"
    click.echo(f"model {name} {'is now' if changed else 'was already'} {word}")


@model.command("activate")
@click.argument("name")
@pass_ctx
def model_activate(obj: _Context, name):
    """Activate model NAME: queue what it lacks; workers embed it."""
    _set_active(obj, name, True)


@model.command("deactivate")
@click.argument("name")
@pass_ctx
def model_deactivate(obj: _Context, name):
    """Deactivate model NAME: no longer kept fresh or chosen by default; vectors kept."""
    _set_active(obj, name, False)


COMMANDS = (worker, status, dataset, model)
