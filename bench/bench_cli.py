"""CLI cold start: wall time of one `visearch search --image-id N` process, and what it imports.

    python bench/bench_cli.py --runs 5 [--image-id 1] [--tree /path/to/other/checkout ...]

Each run is a fresh `python -m visearch search --image-id N -k 3` against the database the
environment names (VISEARCH_DATABASE_URL, or the bundled server in VISEARCH_DATA_DIR), so the
time includes interpreter start, imports, joining the database and the search. With --tree, the
same command runs with that checkout first on PYTHONPATH, interleaved run by run with this one
(side by side on a loaded machine; read the ratio). The second table is `python -X importtime`
of one run: cumulative import time of the heaviest top-level packages, and whether torch loaded.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _run(tree: Path, args: list[str], importtime: bool = False) -> tuple[float, str]:
    env = os.environ | {"PYTHONPATH": str(tree)}
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "visearch", *args]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return wall, done.stderr


def _imports(stderr: str) -> dict[str, float]:
    """Top-level package -> seconds of its outermost import, cumulative (python -X importtime);
    a package imported inside another is counted in both."""
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| *(\S+)", line)
        if m:
            name = m.group(2).split(".")[0]
            out[name] = max(out.get(name, 0.0), int(m.group(1)) / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image-id", type=int, default=1)
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="another checkout to compare (its visearch/ first on PYTHONPATH)")
    opts = parser.parse_args()
    trees = [HERE, *opts.tree]
    args = ["search", "--image-id", str(opts.image_id), "-k", "3"]
    for tree in trees:
        _run(tree, args)  # warm the OS file cache and start the bundled server once
    walls: dict[Path, list[float]] = {t: [] for t in trees}
    for _ in range(opts.runs):
        for tree in trees:
            walls[tree].append(_run(tree, args)[0])
    print(f"`visearch {' '.join(args)}`, {opts.runs} runs each, interleaved")
    print(f"| tree | p50 s | min s | max s |\n| --- | ---: | ---: | ---: |")
    for tree in trees:
        w = walls[tree]
        print(f"| {tree} | {statistics.median(w):.2f} | {min(w):.2f} | {max(w):.2f} |")
    print("\n`python -X importtime`, one run: cumulative seconds of the heaviest top-level imports")
    rows = {tree: _imports(_run(tree, args, importtime=True)[1]) for tree in trees}
    names = sorted({n for r in rows.values() for n in r}, key=lambda n: -max(r.get(n, 0) for r in rows.values()))[:12]
    print("| package | " + " | ".join(str(t) for t in trees) + " |")
    print("| --- | " + " | ".join("---:" for _ in trees) + " |")
    for name in names + [n for n in ("torch", "alembic", "sqlalchemy") if n not in names]:
        print(f"| {name} | " + " | ".join(f"{rows[t].get(name, 0):.3f}" for t in trees) + " |")


if __name__ == "__main__":
    main()
