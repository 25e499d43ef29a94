"""Freshness under load: one SQL insert's time to searchable while a 10k backlog drains.

On a fresh embedded database with efficientnet-lite0 registered and one `visearch worker`
(default options, ``--interval 3600`` so only NOTIFY wakes it):

  1. idle: ``--runs`` inserts, one at a time, into an empty queue;
  2. under load: ``--backlog`` CIFAR-10 test images are ingested (a bulk backfill: queued with
     priority 'bulk'), and while the worker drains them, ``--runs`` inserts by plain SQL (another
     client, priority 'interactive' by default) are timed one at a time; the backlog still
     queued after each is recorded, to show it was draining all along;
  3. without priority (what every insert got before revision 0006): one more insert written as
     bulk (``SET LOCAL visearch.queue_priority = 'bulk'``), so it queues behind the backlog in
     FIFO order; timed up to ``--fifo-timeout`` seconds.

    python bench/bench_priority.py [--backlog 10000] [--runs 10]

Time to searchable: from the insert's commit until ``search(image_ids=[id])`` answers
(instead of raising NotEmbeddedError), polled every 10 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from bench_worker import CIFAR, CLASSES, start_workers, stop_workers, subset, wait_ready
from visearch.config import Settings
from visearch.db.database import open_database
from visearch.db.models import register_model
from visearch.embedding import load_model
from visearch.errors import NotEmbeddedError
from visearch.ingest import ingest_folder
from visearch.search import SearchRequest, search


def insert(db, ds: int, n: int, *, bulk: bool = False) -> int:
    """One image written by another client (plain SQL), a CIFAR photo not in the backlog."""
    path = CIFAR / CLASSES[n % len(CLASSES)] / f"{990 + n // len(CLASSES):04d}.jpg"
    data = path.read_bytes() + n.to_bytes(4, "big")  # distinct bytes (JPEG ignores the tail)
    with db.transaction() as conn:
        if bulk:
            conn.execute("SET LOCAL visearch.queue_priority = 'bulk'")
        image_id = conn.execute(
            "INSERT INTO images (dataset_id, sha256, width, height, format, file_name)"
            " VALUES (%s, %s, 32, 32, 'JPEG', %s) RETURNING id",
            (ds, hashlib.sha256(data).digest(), f"probe-{n}.jpg")).fetchone()[0]
        conn.execute("INSERT INTO image_content (image_id, content) VALUES (%s, %s)", (image_id, data))
    return image_id


def until_searchable(db, image_id: int, timeout: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            search(db, SearchRequest(image_ids=[image_id], datasets=["probes"], limit=1))
            return time.perf_counter() - t0
        except NotEmbeddedError:
            time.sleep(0.01)
    return float("nan")


def queued(db) -> int:
    with db.connect() as conn:
        return conn.execute("SELECT count(*) FROM embedding_queue WHERE NOT failed").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=10_000, help="CIFAR images queued as a backfill (multiple of 10)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fifo-timeout", type=float, default=600.0)
    args = parser.parse_args()
    if not CIFAR.exists():
        sys.exit(f"missing {CIFAR}")
    with tempfile.TemporaryDirectory(prefix="bench-priority-") as tmp_name:
        tmp = Path(tmp_name)
        db = open_database(Settings(data_dir=tmp / "data", database_url=None))
        model = load_model("efficientnet-lite0")
        with db.transaction() as conn:
            register_model(conn, model.name, model.dim, model.embeds_text)
            ds = conn.execute("INSERT INTO datasets (name) VALUES ('probes') RETURNING id").fetchone()[0]
        procs = start_workers(db.url, 1, tmp, "--interval", "3600")
        try:
            wait_ready(db, procs)
            time.sleep(1.0)
            idle = []
            for n in range(args.runs):
                idle.append(until_searchable(db, insert(db, ds, n), 120))
                time.sleep(0.3)
            folder = subset(tmp / "backlog", args.backlog // len(CLASSES), 0)
            t_ingest = time.perf_counter()
            ingest_folder(db, "backlog", folder, progress=False)
            print(f"ingested {args.backlog} images in {time.perf_counter() - t_ingest:.1f} s", file=sys.stderr)
            time.sleep(2.0)  # the worker is draining
            loaded, left = [], []
            for n in range(args.runs, 2 * args.runs):
                loaded.append(until_searchable(db, insert(db, ds, n), 300))
                left.append(queued(db))
                time.sleep(0.3)
            fifo_left = queued(db)
            fifo = until_searchable(db, insert(db, ds, 2 * args.runs, bulk=True), args.fifo_timeout)
        finally:
            stop_workers(procs)
    rows = [
        ["idle (empty queue)", args.runs, statistics.median(idle), max(idle), 0],
        [f"{args.backlog} bulk items draining, insert interactive (default)", args.runs,
         statistics.median(loaded), max(loaded), f"{min(left)}-{max(left)}"],
        ["same backlog, insert queued as bulk (FIFO: before 0006)", 1, fifo, fifo, fifo_left],
    ]
    print(f"\ntime from an SQL insert's commit to searchable, 1 worker (default options), "
          f"efficientnet-lite0, CIFAR-10 32x32 JPEG")
    print(tabulate(rows, headers=["case", "inserts", "median s", "max s", "backlog queued meanwhile"],
                   floatfmt=".2f"))


if __name__ == "__main__":
    main()
