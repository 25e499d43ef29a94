"""Print (or write into README.md) the README's generated sections: the map from every command
and HTTP route to its module and SQL, and the layout of the tree.

    python scripts/readme_sections.py           # print both sections
    python scripts/readme_sections.py --write   # replace them in README.md
    python scripts/readme_sections.py --check   # exit 1 if README.md differs (tests/test_readme.py)

The commands and routes are read from the real click group and Litestar app, the layout from the
files on disk (each module's docstring gives its line), so a new module, command or route shows
up here; only which service and SQL each one reaches (``SERVICES``) is written by hand, and the
test fails when a command or route is missing from it.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: The SQL files of a search: its context (a function) and its statements' templates.
SEARCH_SQL = "sql/schema/0015_search_context.sql, sql/search/statements.sql"

# command or "METHOD /path" -> (service modules, SQL files) it reaches; "face" module is read
# from the code. Paths are relative to the repository root; globs are allowed.
SERVICES: dict[str, tuple[str, str]] = {
    "visearch db upgrade": ("visearch/db/migrate.py", "alembic/versions/*.py, sql/schema/*.sql"),
    "visearch db url": ("visearch/db/database.py", ""),
    "visearch demo": ("visearch/demo/__init__.py (ingest, embed, search)", ""),
    "visearch ingest": ("visearch/ingest/ (writer.py writes)", "inline in visearch/ingest/writer.py"),
    "visearch embed": ("visearch/admin.py (models_to_embed), visearch/embed.py",
                       "sql/queue/*.sql, sql/vectors/*.sql"),
    "visearch search": ("visearch/search/service.py", SEARCH_SQL),
    "visearch serve": ("visearch/http/app.py", ""),
    "visearch status": ("visearch/status.py", "sql/status/datasets.sql, failures.sql, workers.sql"),
    "visearch worker": ("visearch/worker/scheduler.py -> visearch/embed.py",
                        "sql/queue/*.sql, sql/status/worker_*.sql"),
    "visearch dataset list": ("visearch/admin.py", "sql/catalog/datasets.sql"),
    "visearch dataset enable": ("visearch/admin.py", "sql/catalog/datasets.sql"),
    "visearch dataset disable": ("visearch/admin.py", "sql/catalog/datasets.sql"),
    "visearch model add": ("visearch/admin.py", "sql/queue/queued.sql"),
    "visearch model list": ("visearch/admin.py", "sql/admin/models.sql, sql/queue/queued.sql"),
    "visearch model activate": ("visearch/admin.py", ""),
    "visearch model deactivate": ("visearch/admin.py", ""),
    "POST /v1/search": ("visearch/collections/service.py -> visearch/search/service.py",
                        SEARCH_SQL + ", sql/collections/collection.sql"),
    "GET /v1/collections": ("visearch/collections/service.py", "sql/collections/collection.sql"),
    "GET /v1/collections/{collection_id:int}": ("visearch/collections/service.py",
                                                "sql/collections/collection.sql"),
    "DELETE /v1/collections/{collection_id:int}": ("visearch/collections/service.py", ""),
    "POST /v1/collections/{collection_id:int}/save": ("visearch/collections/service.py", ""),
    "POST /v1/collections/{collection_id:int}/tags": ("visearch/collections/service.py",
                                                      "sql/collections/tag_images.sql"),
    "DELETE /v1/collections/{collection_id:int}/tags": ("visearch/collections/service.py",
                                                        "sql/collections/untag_images.sql"),
    "POST /v1/collections/{collection_id:int}/copy": ("visearch/collections/service.py",
                                                      "sql/collections/copy_*.sql"),
    "GET /v1/datasets": ("visearch/admin.py", "sql/catalog/datasets.sql"),
    "POST /v1/datasets": ("visearch/admin.py", "sql/catalog/datasets.sql"),
    "GET /v1/datasets/{dataset_id:int}": ("visearch/admin.py", "sql/catalog/datasets.sql"),
    "POST /v1/datasets/{dataset_id:int}/enable": ("visearch/admin.py", "sql/catalog/datasets.sql"),
    "POST /v1/datasets/{dataset_id:int}/disable": ("visearch/admin.py", "sql/catalog/datasets.sql"),
    "GET /v1/datasets/{dataset_id:int}/status": ("visearch/catalog.py -> visearch/status.py", "sql/status/*.sql"),
    "POST /v1/datasets/{dataset_id:int}/embed": ("visearch/admin.py, visearch/http/jobs.py -> visearch/embed.py",
                                                 "sql/queue/queued.sql"),
    "POST /v1/datasets/{dataset_id:int}/images": ("visearch/catalog.py -> visearch/ingest/writer.py", ""),
    "GET /v1/images/{image_id:int}": ("visearch/catalog.py", "sql/catalog/image_detail.sql"),
    "GET /v1/images/{image_id:int}/original": ("visearch/catalog.py", "sql/catalog/image_source.sql"),
    "GET /v1/images/{image_id:int}/thumbnail": ("visearch/catalog.py", "sql/catalog/image_source.sql"),
    "GET /v1/annotations/{annotation_id:int}/crop": ("visearch/catalog.py", "sql/catalog/image_source.sql"),
    "GET /health": ("visearch/http/app.py", ""),
    # commands and routes of other branches (issues 7, 10, 11, 12), for when they are merged
    "visearch collections send": ("visearch/integrations/send.py", "sql/integrations/*.sql"),
    "visearch sample": ("visearch/curation/sample.py (k-means: faiss)", "sql/search/statements.sql (candidates), sql/curation/candidate_vectors.sql"),
    "visearch duplicates": ("visearch/curation/duplicates.py", "sql/curation/duplicate_*.sql, exact_duplicates.sql"),
    "visearch suspects": ("visearch/curation/suspects.py", "label_error_suspects() in sql/schema/0013_curation_scoped_neighbours.sql"),
    "POST /v1/sample": ("visearch/curation/sample.py", "sql/search/statements.sql (candidates), sql/curation/candidate_vectors.sql"),
    "GET /v1/datasets/{dataset_id:int}/duplicates": ("visearch/curation/duplicates.py", "sql/curation/duplicate_*.sql"),
    "GET /v1/datasets/{dataset_id:int}/suspects": ("visearch/curation/suspects.py",
                                                   "label_error_suspects() in sql/schema/0013_curation_scoped_neighbours.sql"),
    "POST /v1/collections/{collection_id:int}/feedback": ("visearch/curation/refine.py (Rocchio), visearch/search/",
                                                          SEARCH_SQL + ", sql/collections/collection.sql"),
    "visearch connect label-studio": ("visearch/integrations/", "sql/integrations/*.sql"),
    "visearch dataset delete": ("visearch/admin.py", "sql/admin/dataset_contents.sql"),
    "visearch dataset rename": ("visearch/admin.py", ""),
    "visearch db distribute": ("visearch/db/citus.py", "sql/citus/*.sql"),
    "visearch db hold": ("visearch/db/embedded.py", ""),
    "visearch db shell": ("visearch/db/embedded.py", ""),
    "visearch db start": ("visearch/db/embedded.py", ""),
    "visearch db stop": ("visearch/db/embedded.py", ""),
    "visearch image delete": ("visearch/housekeeping.py", "sql/housekeeping/delete_images.sql"),
    "visearch image find": ("visearch/housekeeping.py", "sql/housekeeping/find_images.sql"),
    "GET /": ("visearch/http/web/", ""),
    "GET /v1/collections/{collection_id:int}/export": ("visearch/housekeeping.py", "sql/collections/export_*.sql"),
    "DELETE /v1/collections/{collection_id:int}/items": ("visearch/housekeeping.py",
                                                         "sql/collections/remove_items.sql"),
    "POST /v1/collections/{collection_id:int}/label-studio": ("visearch/integrations/send.py",
                                                              "sql/integrations/*.sql"),
    "GET /v1/concepts": ("visearch/housekeeping.py", "sql/housekeeping/concepts_by_prefix.sql"),
    "DELETE /v1/datasets/{dataset_id:int}": ("visearch/admin.py", "sql/admin/dataset_contents.sql"),
    "PATCH /v1/datasets/{dataset_id:int}": ("visearch/admin.py", ""),
    "GET /v1/images": ("visearch/housekeeping.py", "sql/housekeeping/find_images.sql"),
    "POST /v1/images/delete": ("visearch/housekeeping.py", "sql/housekeeping/delete_images.sql"),
    "GET /v1/images/{image_id:int}/captions": ("visearch/housekeeping.py", ""),
    "GET /v1/models": ("visearch/admin.py (list_models)", "sql/admin/models.sql, sql/queue/queued.sql"),
}

# The files one `POST /v1/search` (by stored image ids, over an embedded dataset) runs code in,
# in the order a reader follows it, and the SQL files it reads; tests/test_examples.py traces a
# real request and checks this list. Left out: the plumbing (SEARCH_PLUMBING).
SEARCH_PATH = {
    "visearch/http/controllers/search.py": "parses the body; builds the response, with each item's links",
    "visearch/collections/service.py": "`search_to_collection`: search, histogram, keep the ranking, read page 1",
    "visearch/search/service.py": "`search`; further down the serving model and coverage, `score_histogram`, `parse_query`",
    "sql/schema/0015_search_context.sql":
        "`search_context()`: names, model, index, filter sizes and the stored query vectors, in one call",
    "visearch/search/query_vector.py": "the query vector (here: the mean of the stored vectors)",
    "visearch/search/statements.py": "`Shape`: composes the ranking and histogram statements",
    "sql/search/statements.sql": "their templates and fragments (`rank_images`, `score_histogram`, ...)",
    "sql/collections/collection.sql": "`insert_search`, `select_collections`, `items_page`",
}
# What other searches add to it (said under the list).
SEARCH_PATH_ALSO = (
    "While items of the searched datasets are still queued for the model, the search also counts "
    "them (`sql/status/coverage.sql`); a text query or an uploaded image runs the model "
    "(`visearch/embedding/`); a refinement (`diversity`, `expand`, feedback ids) goes through "
    "`visearch/curation/refine.py`."
)
SEARCH_PLUMBING = [
    "visearch/http/app.py", "visearch/http/auth.py", "visearch/http/edge.py", "visearch/http/reads.py",
    "visearch/db/database.py", "visearch/db/routing.py", "visearch/db/prepared.py", "visearch/resources.py",
]

# Folders outside the package, in the order shown, with what they hold.
FOLDERS = {
    "alembic/versions": "migrations; each runs SQL files from sql/schema/ (frozen once released)",
    "sql": "the SQL people should read, by area (each file says what it does)",
    "examples": "library use end to end, run by the tests",
    "scripts": "maintenance scripts (this README's generated sections)",
    "bench": "benchmarks that print tables (ratios measured side by side)",
    "tests": "pytest against a real PostgreSQL and the images in ../shared/data",
}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _cli_commands() -> list[tuple[str, str]]:
    import click

    from visearch.cli import cli

    out = []

    def walk(group: click.Group, prefix: list[str]) -> None:
        for name, command in sorted(group.commands.items()):
            if isinstance(command, click.Group):
                walk(command, prefix + [name])
            else:
                out.append((" ".join(prefix + [name]), command.callback.__module__))

    walk(cli, ["visearch"])
    return out


def _routes() -> list[tuple[str, str]]:
    from visearch.config import Settings
    from visearch.db.database import Database
    from visearch.http.app import create_app

    app = create_app(Settings(api_keys=[]), Database(url="postgresql:///unused", embedded=False))
    out = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            module = handler.handler_id.split("::")[0].rsplit(".", 1)[0]
            if not module.startswith("visearch."):
                continue  # OPTIONS and the OpenAPI pages
            module = re.sub(r"\.[A-Z]\w*$", "", module)  # drop the controller class
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                out.append((f"{method} {route.path}", module))
    return sorted(set(out), key=lambda r: (r[0].split(" ", 1)[1], r[0]))


def _module_path(module: str) -> str:
    path = ROOT.joinpath(*module.split("."))
    return _rel(path / "__init__.py") if path.is_dir() else _rel(path.with_suffix(".py"))


def entries() -> list[tuple[str, str]]:
    """(command or route, module that defines it) for every CLI command and HTTP route."""
    return _cli_commands() + _routes()


def map_section() -> str:
    rows = ["| command / route | defined in | service | SQL |", "| --- | --- | --- | --- |"]
    for key, module in entries():
        service, sql = SERVICES.get(key, ("?", "?"))
        rows.append(f"| `{key}` | `{_module_path(module)}` | {service} | {sql or '-'} |")
    python = [p for p in SEARCH_PATH if p.endswith(".py")]
    rows += [
        "",
        f"Following one `POST /v1/search` (by stored image ids) means reading {len(SEARCH_PATH)} files, "
        f"{len(python)} Python and {len(SEARCH_PATH) - len(python)} SQL, in this order (traced on a real "
        "request by `tests/test_examples.py`; left out: the plumbing of connections, reads and "
        "prepared statements, "
        + ", ".join(f"`{p}`" for p in SEARCH_PLUMBING) + "):",
        "",
        *[f"{n}. `{p}`: {role}" for n, (p, role) in enumerate(SEARCH_PATH.items(), 1)],
        "",
        SEARCH_PATH_ALSO,
    ]
    return "\n".join(rows)


def _docline(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except SyntaxError:
        doc = ""
    line = doc.strip().split("\n\n")[0].replace("\n", " ")
    line = re.sub(r"\s+", " ", line)
    return line if len(line) <= 110 else line[:107].rsplit(" ", 1)[0] + " ..."


def layout_section() -> str:
    lines = ["```text"]
    package = ROOT / "visearch"
    for path in sorted(package.rglob("*.py"), key=lambda p: (p.parent != package, _rel(p))):
        if path.name == "__init__.py" and path.parent == package:
            continue
        lines.append(f"{_rel(path):<40} {_docline(path)}".rstrip())
    for folder, what in FOLDERS.items():
        base = ROOT / folder
        if not base.is_dir():
            continue
        lines.append(f"{folder + '/':<40} {what}")
        if folder == "sql":
            for sub in sorted(p for p in base.iterdir() if p.is_dir()):
                names = ", ".join(p.stem for p in sorted(sub.glob("*.sql")))
                lines.append(f"  {sub.name + '/':<38} {names}")
    lines.append("```")
    return "\n".join(lines)


SECTIONS = {"map": map_section, "layout": layout_section}


def render(readme: str) -> str:
    """``readme`` with each ``<!-- generated:NAME -->`` ... ``<!-- /generated:NAME -->`` block
    replaced by the current section."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.S)
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- generated:{name} --> block")
        readme = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), readme)
    return readme


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    current = README.read_text(encoding="utf-8")
    if "--write" in argv:
        README.write_text(render(current), encoding="utf-8")
        return 0
    if "--check" in argv:
        if render(current) != current:
            print("README.md's generated sections are out of date: python scripts/readme_sections.py --write")
            return 1
        return 0
    for make in SECTIONS.values():
        print(make(), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
