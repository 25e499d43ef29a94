"""Freshness benchmark: `visearch worker` processes on CIFAR-10 test images (efficientnet-lite0).

Measures, on a fresh embedded database:
  * latency from an external INSERT (plain SQL: images + image_content, one transaction, as an
    annotation tool would write it) to searchable (``search(image_ids=[new id])`` answers
    instead of raising NotEmbeddedError), with one idle worker running; median, p90 and max
    over ``--runs`` inserts, one at a time;
  * queue throughput (items/s) with one and with two worker processes: ``--images`` CIFAR
    images are ingested into a dataset with AI search disabled (queued but not claimable), the
    workers are started and ready, then enabling the dataset (NOTIFY) starts the clock, which
    stops when the dataset's queue is empty. Each worker count gets its own images.

    python bench/bench_worker.py [--images 1000] [--runs 10] [--workers 1,2] [--worker-args '--threads 1']

Worker processes run with default options (batch 64, claim 256, decode processes automatic).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from visearch.config import Settings
from visearch.db.database import open_database
from visearch.errors import NotEmbeddedError
from visearch.ingest import ingest_folder
from visearch.search import SearchRequest, search

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-test"
VISEARCH = str(Path(sys.executable).with_name("visearch"))
CLASSES = sorted(p.name for p in CIFAR.iterdir()) if CIFAR.exists() else []


def subset(dest: Path, per_class: int, start: int) -> Path:
    """Copy images start..start+per_class-1 of every class into dest/CLASS/ (ingest input)."""
    for cls in CLASSES:
        (dest / cls).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            shutil.copy2(CIFAR / cls / f"{i:04d}.jpg", dest / cls / f"{i:04d}.jpg")
    return dest


def start_workers(url: str, k: int, log_dir: Path, *args: str) -> list[subprocess.Popen]:
    env = {key: v for key, v in os.environ.items() if not key.startswith("VISEARCH_")}
    env.update(VISEARCH_DATABASE_URL=url, PYTHONUNBUFFERED="1")
    procs = []
    for i in range(k):
        log = open(log_dir / f"worker-{k}-{i}.log", "wb")
        procs.append(subprocess.Popen([VISEARCH, "worker", *args], stdout=log, stderr=subprocess.STDOUT, env=env))
    return procs


def wait_ready(db, procs, timeout=300.0) -> None:
    deadline = time.monotonic() + timeout
    with db.connect(autocommit=True) as conn:
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    sys.exit(f"worker {p.pid} exited with {p.returncode}")
            pids = [p.pid for p in procs]
            ready = conn.execute("SELECT count(DISTINCT pid) FROM embedding_workers WHERE pid = ANY(%s)",
                                 (pids,)).fetchone()[0]
            if ready == len(procs):
                return
            time.sleep(0.2)
    sys.exit("workers not ready in time")


def stop_workers(procs) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(120)


def throughput(db, url: str, k: int, images: int, start: int, tmp: Path, extra: list[str]) -> dict:
    name = f"bench-{k}-workers"
    with db.transaction() as conn:
        conn.execute("INSERT INTO datasets (name, search_enabled) VALUES (%s, false)", (name,))
    folder = subset(tmp / name, images // len(CLASSES), start)
    ingest_folder(db, name, folder, labels_from_folders=True, progress=False)
    procs = start_workers(url, k, tmp, "--interval", "30", *extra)
    try:
        wait_ready(db, procs)
        with db.connect(autocommit=True) as conn:
            queued = conn.execute("SELECT count(*) FROM embedding_queue q JOIN datasets d ON d.id = q.dataset_id"
                                  " WHERE d.name = %s", (name,)).fetchone()[0]
            t0 = time.perf_counter()
            conn.execute("UPDATE datasets SET search_enabled = true WHERE name = %s", (name,))
            while conn.execute("SELECT count(*) FROM embedding_queue q JOIN datasets d ON d.id = q.dataset_id"
                               " WHERE d.name = %s", (name,)).fetchone()[0]:
                time.sleep(0.05)
            seconds = time.perf_counter() - t0
            embedded = conn.execute(
                "SELECT count(*) FROM image_embeddings e JOIN images i ON i.id = e.image_id"
                " JOIN datasets d ON d.id = i.dataset_id WHERE d.name = %s", (name,)).fetchone()[0]
    finally:
        stop_workers(procs)
    assert embedded == queued, (embedded, queued)
    return {"workers": k, "items": queued, "seconds": seconds, "items/s": queued / seconds}


def latency(db, url: str, runs: int, tmp: Path, extra: list[str]) -> list[float]:
    name = "bench-latency"
    with db.transaction() as conn:
        ds = conn.execute("INSERT INTO datasets (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]
    procs = start_workers(url, 1, tmp, "--interval", "3600", *extra)  # only NOTIFY can wake it in time
    times = []
    try:
        wait_ready(db, procs)
        time.sleep(1.0)
        for run in range(runs):
            path = CIFAR / CLASSES[run % len(CLASSES)] / f"{900 + run:04d}.jpg"
            data = path.read_bytes()
            with db.transaction() as conn:  # another tool's write: plain SQL
                image_id = conn.execute(
                    "INSERT INTO images (dataset_id, sha256, width, height, format, file_name)"
                    " VALUES (%s, %s, 32, 32, 'JPEG', %s) RETURNING id",
                    (ds, hashlib.sha256(data).digest(), path.name)).fetchone()[0]
                conn.execute("INSERT INTO image_content (image_id, content) VALUES (%s, %s)", (image_id, data))
            t0 = time.perf_counter()
            while True:
                try:
                    search(db, SearchRequest(image_ids=[image_id], datasets=[name], limit=1))
                    break
                except NotEmbeddedError:
                    time.sleep(0.01)
            times.append(time.perf_counter() - t0)
            time.sleep(0.5)
    finally:
        stop_workers(procs)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="images per throughput run (multiple of 10)")
    parser.add_argument("--runs", type=int, default=10, help="inserts timed for latency")
    parser.add_argument("--data-dir", type=Path, default=None, help="embedded server data (default: a temp dir)")
    parser.add_argument("--workers", default="1,2", help="worker counts for throughput, e.g. 1,2")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--worker-args", default="", help="extra `visearch worker` options, e.g. '--threads 1'")
    args = parser.parse_args()
    if not CIFAR.exists():
        sys.exit(f"missing {CIFAR}: see ../shared/data/README.md")
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp_name:
        tmp = Path(tmp_name)
        settings = Settings(data_dir=args.data_dir or tmp / "data", database_url=None)
        db = open_database(settings)
        extra = args.worker_args.split()
        t_lat = [] if args.skip_latency else latency(db, db.url, args.runs, tmp, extra)
        counts = [int(k) for k in args.workers.split(",")]
        rows = [throughput(db, db.url, k, args.images, start=i * (args.images // 10), tmp=tmp, extra=extra)
                for i, k in enumerate(counts)]
    t_lat.sort()
    if t_lat:
        print(f"\nfreshness: external INSERT -> searchable, {len(t_lat)} inserts, 1 idle worker (--interval 3600)")
        print(tabulate([[statistics.median(t_lat), t_lat[int(0.9 * (len(t_lat) - 1))], max(t_lat)]],
                       headers=["median s", "p90 s", "max s"], floatfmt=".3f"))
    print(f"\nqueue throughput: CIFAR-10 test images (32x32 JPEG), efficientnet-lite0, {os.cpu_count()} CPUs,"
          f" worker options: {args.worker_args or 'defaults'}")
    print(tabulate([[r["workers"], r["items"], r["seconds"], r["items/s"]] for r in rows],
                   headers=["workers", "items", "seconds", "items/s"], floatfmt=".1f"))


if __name__ == "__main__":
    main()
