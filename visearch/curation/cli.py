"""Click commands for curation: ``sample``, ``duplicates``, ``suspects``.

Registered on the main ``visearch`` group at the bottom of :mod:`visearch.cli`; each calls one
library function of :mod:`visearch.curation`.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import click

from visearch.curation.duplicates import DEFAULT_THRESHOLD, EDGE_FLOOR

# The main group's context object (visearch.cli._Context: .db, .settings), taken by duck type so
# that this module does not import the CLI module that imports it.
pass_ctx = click.pass_obj
_Context = object


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from exc


def _model():
    from visearch.worker.cli import model_from_command_line

    return model_from_command_line()


def _echo_json(value) -> None:
    click.echo(json.dumps(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value,
                          indent=2, default=str))


@click.command()
@click.option("-d", "--dataset", "datasets", multiple=True, help="Only these datasets (repeatable).")
@click.option("-n", "--count", "n", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="Items wanted (= k-means clusters).")
@click.option("--method", type=click.Choice(["centroids", "random"]), default="centroids", show_default=True,
              help="centroids: the item nearest each cluster's centre; random: one random member each.")
@click.option("--objects", is_flag=True, help="Sample objects (boxes), not images.")
@click.option("--concept", "concepts", multiple=True, help="Only items showing this #concept (repeatable).")
@click.option("--exclude-concept", "exclude_concepts", multiple=True, help="Leave out items showing it.")
@click.option("--metadata", help='images.metadata must contain this JSON object, e.g. \'{"camera": "a"}\'.')
@click.option("--created-from", type=click.DateTime(), help="Images added at or after this time.")
@click.option("--created-to", type=click.DateTime(), help="Images added before this time.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same sample.")
@click.option("--owner", default="anonymous", show_default=True,
              help="Whose temporary collection the sample becomes (the API key's name; anonymous without keys).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def sample(obj: _Context, datasets, n, method, objects, concepts, exclude_concepts, metadata, created_from,
           created_to, seed, owner, as_json):
    """A diverse sample: k-means (k = N) over the vectors of the items passing the filters, one
    item per cluster, largest cluster first. Kept as the owner's temporary collection (replacing
    their last search), to save, tag, copy or export like any search."""
    from visearch.curation.sample import sample_to_collection
    from visearch.errors import VisearchError
    from visearch.search import SearchRequest

    try:
        meta = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from exc
    req = SearchRequest(
        mode="objects" if objects else "images", datasets=datasets, concepts=concepts,
        exclude_concepts=exclude_concepts, metadata=meta, created_from=created_from,
        created_to=created_to, model=_model(),
    )
    query = {"sample": {"datasets": list(datasets), "n": n, "method": method, "mode": req.mode,
                        "concepts": list(concepts), "exclude_concepts": list(exclude_concepts), "metadata": meta,
                        "created_from": created_from and created_from.isoformat(),
                        "created_to": created_to and created_to.isoformat(), "seed": seed, "model": req.model}}
    try:
        kept = sample_to_collection(obj.db, owner, req, n, method=method, seed=seed, query=query,
                                    settings=obj.settings)
    except VisearchError as exc:
        _fail(exc)
    result = kept.result
    if as_json:
        _echo_json({"collection_id": kept.collection.id, "owner": owner, **dataclasses.asdict(result)})
        return
    from tabulate import tabulate

    click.echo(f"{len(result.hits)} {result.mode} sampled by {method} from {result.candidates} "
               f"({result.model}, k-means fitted on {result.fitted_on}); kept as {owner}'s temporary "
               f"collection {kept.collection.id}")
    rows = [(h.cluster, h.cluster_size, h.annotation_id or "", h.image_id, h.concept or "", h.dataset,
             h.file_name, h.score) for h in result.hits]
    click.echo(tabulate(rows, headers=["cluster", "size", "annotation", "image", "concept", "dataset", "file",
                                       "sim to centre"], floatfmt=".4f"))


@click.command()
@click.option("-d", "--dataset", required=True, help="The dataset to look in.")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help=f"Cosine similarity at or above which two items are near-duplicates (>= {EDGE_FLOOR}).")
@click.option("--objects", is_flag=True, help="Boxes instead of images.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def duplicates(obj: _Context, dataset, threshold, objects, as_json):
    """Near-duplicate groups (connected components over HNSW neighbour pairs), each with a
    suggested keeper (most pixels, then oldest), and byte-identical copies across datasets."""
    from visearch.curation import find_duplicates
    from visearch.errors import VisearchError

    try:
        report = find_duplicates(obj.db, dataset, threshold=threshold, objects=objects, model=_model(),
                                 settings=obj.settings)
    except VisearchError as exc:
        _fail(exc)
    if as_json:
        _echo_json(report)
        return
    from tabulate import tabulate

    click.echo(f"{len(report.groups)} near-duplicate groups of {report.mode} in {dataset} "
               f"(cosine similarity >= {threshold:g}, {report.model})")
    rows = []
    for g, group in enumerate(report.groups, 1):
        for m in group.members:
            rows.append((g, "keep" if m.item_id == group.keeper else "", m.item_id, m.dataset, m.file_name,
                         f"{m.width}x{m.height}", _date(m.created_at),
                         "" if m.similarity is None else f"{m.similarity:.4f}"))
    if rows:
        click.echo(tabulate(rows, headers=["group", "", "id", "dataset", "file", "size", "added", "similarity"]))
    if report.exact:
        click.echo(f"{len(report.exact)} byte-identical images (same sha256) in other datasets:")
        click.echo(tabulate([(e.sha256[:16], m.image_id, m.dataset, m.file_name) for e in report.exact
                             for m in e.images], headers=["sha256", "image", "dataset", "file"]))


def _date(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@click.option("-d", "--dataset", required=True, help="The dataset to look in.")
@click.option("--objects/--images", default=True, show_default=True,
              help="Boxes (their concept) or images (their single image label).")
@click.option("-k", "--neighbours", "k", type=click.IntRange(1, 200), default=10, show_default=True,
              help="Nearest neighbours that vote.")
@click.option("--min-share", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="Share of neighbours that must carry the other concept.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_ctx
def suspects(obj: _Context, dataset, objects, k, min_share, limit, as_json):
    """Label-error suspects: items whose nearest neighbours mostly carry another concept, with
    the concept they look like and the evidence (neighbour ids and similarities)."""
    from visearch.curation import label_error_suspects
    from visearch.errors import VisearchError

    try:
        found = label_error_suspects(obj.db, dataset, objects=objects, k=k, min_share=min_share, limit=limit,
                                     model=_model(), settings=obj.settings)
    except VisearchError as exc:
        _fail(exc)
    if as_json:
        _echo_json([dataclasses.asdict(s) for s in found])
        return
    from tabulate import tabulate

    click.echo(f"{len(found)} suspects in {dataset} (k = {k}, share >= {min_share:g})")
    rows = [(s.item_id, s.image_id, s.concept, s.looks_like, f"{s.share:.2f}",
             " ".join(f"{i}:{sc:.2f}" for i, sc in zip(s.neighbour_ids[:5], s.scores[:5]))) for s in found]
    click.echo(tabulate(rows, headers=["id", "image", "labelled", "looks like", "share", "neighbours (id:sim)"]))


COMMANDS = (sample, duplicates, suspects)
