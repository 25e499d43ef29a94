"""Ingest throughput: CIFAR-10 test (10,000 small JPEGs, labels from folders) and coco128
(128 photos with 939 boxes), into a fresh embedded database; each ingested twice (the second
run finds everything already there and adds nothing).

    python bench/bench_ingest.py [--workers 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from visearch.config import Settings
from visearch.db.database import open_database
from visearch.db.embedded import release_embedded_server
from visearch.ingest import ingest_coco, ingest_folder

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=4, help="decode threads")
    args = ap.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="visearch-bench-ingest-"))
    data_dir.chmod(0o755)
    try:
        db = open_database(Settings(data_dir=data_dir))
        runs = {
            "cifar10-test (labels from folders)": lambda: ingest_folder(
                db, "cifar", DATA / "cifar10-test", labels_from_folders=True,
                workers=args.workers, progress=False),
            "coco128 (COCO boxes)": lambda: ingest_coco(
                db, "coco128", DATA / "coco128" / "train2017",
                DATA / "coco128" / "annotations" / "instances_train2017.json",
                workers=args.workers, progress=False),
        }
        table = []
        for name, run in runs.items():
            for attempt in ("first", "again"):
                t0 = time.perf_counter()
                report = run()
                seconds = time.perf_counter() - t0
                seen = report.images_added + report.images_existing
                table.append([name, attempt, report.images_added, report.annotations_added,
                              f"{seconds:.2f}", f"{seen / seconds:.0f}"])
        print(f"\ningest, {args.workers} decode threads, bytes stored in PostgreSQL")
        print(tabulate(table, headers=["data", "run", "images added", "boxes added", "seconds", "images/s"]))
    finally:
        release_embedded_server(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
