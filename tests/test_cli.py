"""The command line as a user runs it: `visearch demo` (the README's main command), search --json,
and ingest reporting bad files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import truncate_all


def _visearch(args, database, tmp_path, check=True):
    env = os.environ | {"VISEARCH_DATABASE_URL": database.url, "VISEARCH_DATA_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "visearch", *args], env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def demo_run(database, tmp_path_factory):
    truncate_all(database)
    tmp = tmp_path_factory.mktemp("demo")
    return _visearch(["demo"], database, tmp), tmp


def test_demo_ingests_embeds_and_searches_real_photos(demo_run):
    proc, _ = demo_run
    out = proc.stdout
    assert "18 images, 13 annotations, 10 concepts" in out
    assert "embedded 18 images and 13 objects" in out
    # the two photos of the same motorcycle (a stereo pair) are each other's nearest neighbours
    block = out.split("== images like image")[1].split("==")[0]
    rows = [line.split() for line in block.splitlines()]
    files = [r[3] for r in rows if len(r) == 5 and r[0].replace(".", "").isdigit()]
    assert files[:2] == ["motorcycle_left.png", "motorcycle_right.png"]


def test_search_json_output(demo_run, database):
    _, tmp = demo_run
    out = _visearch(["search", "#motorcycle", "--objects", "--json", "-k", "5"], database, tmp).stdout
    result = json.loads(out)
    assert result["query_source"] == "concepts"
    assert {h["concept"] for h in result["hits"]} == {"motorcycle"}
    assert len(result["hits"]) == 2


def test_cli_errors_are_one_line_not_tracebacks(demo_run, database):
    _, tmp = demo_run
    proc = _visearch(["search", "a motorcycle"], database, tmp, check=False)
    assert proc.returncode == 1
    assert "image-only" in proc.stderr and "Traceback" not in proc.stderr
    proc = _visearch(["search", "--image-id", "424242"], database, tmp, check=False)
    assert proc.returncode == 1 and "unknown image id" in proc.stderr


def test_ingest_reports_bad_files_and_keeps_the_rest(database, coco128, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted((coco128 / "train2017").glob("*.jpg"))[:3]:
        shutil.copy(src, folder)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG" * 10)
    (folder / "empty.png").write_bytes(b"")
    out = _visearch(["ingest", str(folder), "-d", "cli-ingest"], database, tmp_path).stdout
    assert "3 images" in out
    assert "corrupt.jpg" in out and "empty.png" in out
