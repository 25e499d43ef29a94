"""The README's generated sections match the tree, and examples/ runs as documented."""

from __future__ import annotations

import os
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
