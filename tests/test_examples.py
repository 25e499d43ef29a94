"""The README's generated sections match the tree, and examples/ runs as documented."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from test_freshness import coco_files

ROOT = Path(__file__).resolve().parents[1]


def _readme_sections():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import readme_sections
    finally:
        sys.path.pop(0)
    return readme_sections


def test_the_readme_map_and_layout_match_the_code():
    """Regenerate with `python scripts/readme_sections.py --write` when this fails."""
    sections = _readme_sections()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert sections.render(readme) == readme, "python scripts/readme_sections.py --write"


def test_every_command_and_route_is_mapped_to_existing_files():
    sections = _readme_sections()
    keys = [key for key, _ in sections.entries()]
    assert "visearch search" in keys and "POST /v1/search" in keys
    missing = [k for k in keys if k not in sections.SERVICES]
    assert not missing, f"add to SERVICES in scripts/readme_sections.py: {missing}"
    for service, sql in (sections.SERVICES[k] for k in keys):
        for ref in (service + ", " + sql).replace("->", ",").split(","):
            path = ref.strip().split(" ")[0]
            if path.startswith(("visearch/", "sql/", "alembic/")):
                assert list(ROOT.glob(path)), f"{path} does not exist"


def test_search_from_python_example_runs_end_to_end(db, tmp_path):
    """examples/search_from_python.py on six coco128 photos in two labelled folders."""
    for label, files in (("street", coco_files(3, start=100)), ("indoor", coco_files(3, start=103))):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for f in files:
            shutil.copy(f, tmp_path / "photos" / label / f.name)
    env = os.environ | {"VISEARCH_DATABASE_URL": db.url, "VISEARCH_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "search_from_python.py"), str(tmp_path / "photos"),
         "--labels-from-folders"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "embedded 6 images" in out, out
    lines = out.split("images like image")[1].splitlines()[1:4]
    assert lines[0].split()[0] == "1.0000", out  # the query image first, similarity 1
    assert "most typical #indoor: " in out and out.count(".jpg") >= 6, out


def test_the_readme_lists_the_files_one_http_search_runs(db, settings):
    """`POST /v1/search` traced (a profiler on every thread): the visearch modules whose code runs
    for it and the SQL files it reads, leaving out the plumbing every route shares, are exactly
    the README map's list (``SEARCH_PATH`` in scripts/readme_sections.py), at most 8 files
    (issue 9). A function of visearch's schema that a statement sent calls is followed into the
    file that defines it (the last revision that does). The dataset is fully embedded, as after
    a worker's pass: a search of a dataset still being embedded also counts what is queued
    (sql/status/coverage.sql)."""
    import threading

    import numpy as np
    from litestar.testing import TestClient

    import visearch
    from visearch import resources
    from visearch.db import prepared
    from visearch.db.vectors import write_vectors
    from visearch.http.app import create_app

    from test_freshness import add_dataset, add_image, fake_model

    sections = _readme_sections()
    with db.transaction() as conn:
        model = fake_model(conn, "m")
        ds = add_dataset(conn)
        ids = [add_image(conn, ds, p) for p in coco_files(3)]
        write_vectors(conn, model_id=model, item_kind="image", item_ids=ids,
                      vectors=np.eye(3, dtype=np.float32))
        # the worker takes each item off the queue as it writes its vector (sql/queue/complete.sql)
        conn.execute("DELETE FROM embedding_queue WHERE model_id = %s", (model,))
    package = Path(visearch.__file__).resolve().parent
    ran, sql_read, sent, tracing = set(), set(), [], threading.Event()

    def profile(frame, event, _arg):
        if event == "call" and tracing.is_set():
            path = frame.f_code.co_filename
            if path.startswith(str(package)):
                ran.add(Path(path).relative_to(ROOT).as_posix())
                if frame.f_code is resources.read_sql.__wrapped__.__code__:
                    sql_read.add(f"sql/{frame.f_locals['name']}")
                if frame.f_code is prepared.run.__code__:
                    sent.extend(statement.text for statement, _ in frame.f_locals["steps"])

    body = {"image_ids": [ids[0]], "limit": 2}
    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        with TestClient(create_app(settings.model_copy(update={"api_keys": []}), db)) as client:
            assert client.post("/v1/search", json=body).status_code == 200  # warm: imports, pools
            for module in [m for name, m in sys.modules.items() if name.startswith("visearch.")]:
                for value in list(vars(module).values()):  # so each SQL file read shows as a call
                    if callable(getattr(value, "cache_clear", None)):
                        value.cache_clear()
            tracing.set()
            response = client.post("/v1/search", json=body)
            tracing.clear()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    assert response.status_code == 200 and response.json()["items"][0]["image_id"] == ids[0]
    defined = {}  # schema function -> the last revision's file that defines it
    for path in sorted((ROOT / "sql" / "schema").glob("*.sql")):
        for name in re.findall(r"CREATE (?:OR REPLACE )?FUNCTION (\w+)", path.read_text(encoding="utf-8")):
            defined[name] = path.relative_to(ROOT).as_posix()
    texts = sent + [resources.read_sql(name.removeprefix("sql/")) for name in sql_read]
    called = {name for text in texts for name in re.findall(r"\b(\w+)\s*\(", text)}
    functions = {defined[name] for name in called & defined.keys()}
    assert "sql/schema/0015_search_context.sql" in functions, sorted(functions)  # (the trace sees them)
    followed = (ran | sql_read | functions) - set(sections.SEARCH_PLUMBING)
    assert sorted(followed) == sorted(sections.SEARCH_PATH), "\n".join(sorted(followed))
    assert len(sections.SEARCH_PATH) <= 8
