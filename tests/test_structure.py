"""The house's structure: every module imports on its own, layers point one way, and the
command line answers without torch when the query needs no model."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import visearch

PACKAGE = Path(visearch.__file__).resolve().parent
ROOT = PACKAGE.parent

# Imported by running them (python -m visearch), not as libraries.
_ENTRY_POINTS = {"visearch.__main__"}


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in _ENTRY_POINTS:
            names.append(name)
    return names


def test_every_module_imports_on_its_own():
    """Each module is imported first, with no visearch module loaded before it: an import cycle
    (a.py imports b.py which imports a.py) fails for whichever module comes first, so only this
    order finds every cycle. Third-party modules stay loaded between imports (speed)."""
    script = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'visearch' or m.startswith('visearch.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    modules = _modules()
    assert "visearch.worker.cli" in modules and len(modules) > 50
    done = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_worker_commands_import_alone_in_a_fresh_interpreter():
    """The failure issue 9 reported: `import visearch.worker.cli` raised ImportError (cycle)."""
    done = subprocess.run([sys.executable, "-c", "import visearch.worker.cli, visearch.http.cli"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _imports(path: Path) -> set[str]:
    """Every visearch module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "visearch" or m.startswith("visearch.")}


def _in(name: str, packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages.split())


def _is_face(name: str) -> bool:
    """A command-line module (``visearch.cli``, ``visearch.cli_context``, any ``*.cli`` or
    ``*_cli`` module) or the HTTP layer."""
    last = name.rsplit(".", 1)[-1]
    return last in ("cli", "cli_context") or last.endswith("_cli") or _in(name, "visearch.http")


def test_layers_point_one_way():
    """CLI and HTTP -> services -> db -> SQL; the worker uses services, never the reverse."""
    imports = {".".join(p.relative_to(ROOT).with_suffix("").parts): _imports(p) for p in PACKAGE.rglob("*.py")}
    imports = {(m[: -len(".__init__")] if m.endswith(".__init__") else m): hits for m, hits in imports.items()}
    services = ("visearch.admin visearch.catalog visearch.status visearch.search visearch.collections "
                "visearch.ingest visearch.embed visearch.worker visearch.demo visearch.housekeeping "
                "visearch.integrations visearch.media")
    # db/ is the lowest visearch layer: it imports no service and no face (its own CLI module aside)
    upward = {m: {h for h in hits if _in(h, services) or _is_face(h)}
              for m, hits in imports.items() if _in(m, "visearch.db") and not _is_face(m)}
    assert not {m: h for m, h in upward.items() if h}, upward
    # only the command line and the HTTP app import the command line and the HTTP app
    into_faces = {m: {h for h in hits if _is_face(h)} for m, hits in imports.items()
                  if not _is_face(m) and m not in ("visearch.__main__", "visearch.demo")}
    assert not {m: h for m, h in into_faces.items() if h}, into_faces
    # services never import the worker process (worker.serving is the search layer's, and moves
    # there with issue 9's search path; it is the one exception)
    into_worker = {m: {h for h in hits if _in(h, "visearch.worker") and not _in(h, "visearch.worker.serving")}
                   for m, hits in imports.items() if not _in(m, "visearch.worker") and not _is_face(m)}
    assert not {m: h for m, h in into_worker.items() if h}, into_worker
    # embedding status is a service of its own: it does not go through search
    assert not {h for h in imports["visearch.status"] if _in(h, "visearch.search")}, "status imports search"
    # one command module never imports another: they share visearch.cli_context
    cli_cycles = {m: hits for m, hits in imports.items()
                  if _is_face(m) and m != "visearch.cli" and "visearch.cli" in hits}
    assert not cli_cycles, f"import from visearch.cli_context instead: {cli_cycles}"


def test_queries_that_need_no_model_import_no_torch(db):
    """`visearch search` by stored ids, annotation ids or #concepts answers from stored vectors:
    it must not import torch (seconds of start-up) nor load a model. The vectors here are
    synthetic, so only the command's imports are under test."""
    import numpy as np

    from visearch.db.models import register_model
    from visearch.db.vectors import write_vectors

    rng = np.random.default_rng(0)
    with db.transaction() as conn:
        model = register_model(conn, "synthetic-8", 8, False)
        dataset = conn.execute("INSERT INTO datasets (name) VALUES ('s') RETURNING id").fetchone()[0]
        ids = [r[0] for r in conn.execute(
            "INSERT INTO images (dataset_id, sha256, width, height, format)"
            " SELECT %s, sha256(g::text::bytea), 100, 100, 'JPEG' FROM generate_series(1, 20) g RETURNING id",
            (dataset,)).fetchall()]
        cat = conn.execute("INSERT INTO concepts (name) VALUES ('cat') RETURNING id").fetchone()[0]
        boxes = [conn.execute("INSERT INTO annotations (image_id, concept_id, bbox_x, bbox_y, bbox_w, bbox_h)"
                              " VALUES (%s, %s, 10, 10, 50, 50) RETURNING id", (i, cat)).fetchone()[0]
                 for i in ids[:5]]
        for kind, items in (("image", ids), ("object", boxes)):
            vecs = rng.normal(size=(len(items), 8)).astype(np.float32)
            write_vectors(conn, model_id=model.id, item_kind=kind, item_ids=items,
                          vectors=vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
        conn.execute("DELETE FROM embedding_queue")
    script = (
        "import sys\n"
        "from visearch.cli import cli\n"
        "cli.main(sys.argv[1:], standalone_mode=False)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    for args in (["--image-id", str(ids[0])], ["--annotation-id", str(boxes[0])], ["#cat"]):
        done = subprocess.run(
            [sys.executable, "-c", script, "--database-url", db.url, "search", *args, "-k", "3"],
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        assert "synthetic-8" in done.stdout, done.stdout  # it answered, from the stored vectors
