"""Latency and throughput of ``POST /v1/search`` against a real ``visearch serve`` on localhost.

What it does, end to end (it stops by itself):

1. Prepares a CIFAR-10 test subset in the embedded database of ``--data-dir``: the first
   ``--per-class`` images of each class (default 200, i.e. 2,000 images; embedding all 10,000
   with efficientnet-lite0 takes long on a small CPU), ingested with ``--labels-from-folders``
   and embedded. Re-runs reuse what is there.
2. Starts ``visearch serve --host 127.0.0.1 --port <free port>`` as a subprocess on the same
   data dir (it joins the same embedded PostgreSQL server) and waits for ``/health``; once per
   ``--torch-threads`` value (default: torch's default, then 1 thread per inference).
3. For each scenario, with 1 and with 8 concurrent clients (threads, one keep-alive HTTP
   connection each), sends a bounded number of requests after a short warm-up and reports
   p50/p95 latency and requests/s:
     * ``image_id``: JSON ``{"image_ids": [random stored id], "limit": 10}`` (20-bin histogram);
     * ``image_id, no histogram``: the same with ``histogram_bins: 0``;
     * ``upload``: multipart, a random CIFAR JPEG (the model embeds it on every request).
   Every request also stores its ranking (100 items) as the caller's temporary collection;
   all clients are ``anonymous`` (no API keys), so they share one temporary collection.
4. Stops the server.

Uploads run the model in the server: with torch's default (one intra-op thread per core) the
inferences of concurrent requests, and any other process on the machine, oversubscribe the
cores and single requests stall now and then; ``--torch-threads 1`` trades single-request
speed on an idle machine for steady latency.

Usage:  python bench/bench_http.py [--per-class 200] [--requests 150] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-test"
DATASET = "cifar10-bench"


def prepare(data_dir: Path, per_class: int) -> list[int]:
    """Ingest and embed the subset (idempotent); return the stored image ids."""
    from visearch.config import Settings
    from visearch.db.database import open_database
    from visearch.embed import embed_pending
    from visearch.embedding import load_model
    from visearch.ingest import ingest_folder

    if not CIFAR.exists():
        sys.exit(f"CIFAR-10 test images not found at {CIFAR} (see ../shared/data/README.md)")
    settings = Settings(data_dir=data_dir)
    db = open_database(settings)
    with tempfile.TemporaryDirectory() as tmp:
        # a folder of symlinks, class folders kept, so labels come from the folder names
        for cls in sorted(p for p in CIFAR.iterdir() if p.is_dir()):
            (Path(tmp) / cls.name).mkdir()
            for f in sorted(cls.glob("*.jpg"))[:per_class]:
                (Path(tmp) / cls.name / f.name).symlink_to(f)
        t0 = time.perf_counter()
        report = ingest_folder(db, DATASET, Path(tmp), labels_from_folders=True, progress=False)
        print(f"ingest: {report.images_added} added, {report.images_existing} existing "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    t0 = time.perf_counter()
    embedded = embed_pending(db, load_model(settings.model), progress=False)
    print(f"embed: {embedded.total_embedded} new vectors ({time.perf_counter() - t0:.1f} s)", flush=True)
    with db.connect() as conn:
        return [r[0] for r in conn.execute(
            "SELECT i.id FROM images i JOIN datasets d ON d.id = i.dataset_id"
            " JOIN image_embeddings e ON e.image_id = i.id WHERE d.name = %s ORDER BY i.id", (DATASET,))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int, log_path: Path, torch_threads: int) -> subprocess.Popen:
    env = os.environ | {"VISEARCH_DATA_DIR": str(data_dir)}
    env.pop("VISEARCH_API_KEYS", None)
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "visearch", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--log-level", "warning", "--torch-threads", str(torch_threads)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"visearch serve exited with {proc.returncode}; log: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    sys.exit("visearch serve did not answer /health within 180 s")


def run_scenario(base: str, make_request, clients: int, total: int, warmup: int) -> dict:
    """``total`` requests split over ``clients`` threads; latencies in ms."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def worker(n: int, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=120) as http:
            for _ in range(warmup):
                make_request(http, rng)
            barrier.wait()
            mine = []
            for _ in range(n):
                t0 = time.perf_counter()
                r = make_request(http, rng)
                mine.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    with lock:
                        errors.append(f"{r.status_code} {r.text[:200]}")
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(n, i)) for i, n in enumerate(per_client)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[min(len(latencies) - 1, int(round(0.95 * len(latencies))) - 1)],
        "rps": len(latencies) / wall,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "visearch-bench-http")
    ap.add_argument("--per-class", type=int, default=200, help="CIFAR-10 test images per class (10 classes)")
    ap.add_argument("--requests", type=int, default=150, help="timed requests per scenario and client count")
    ap.add_argument("--warmup", type=int, default=3, help="untimed requests per client first")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--torch-threads", type=int, nargs="+", default=[0, 1],
                    help="visearch serve --torch-threads values to compare (0: torch's default)")
    args = ap.parse_args()

    args.data_dir.mkdir(parents=True, exist_ok=True)
    args.data_dir.chmod(0o755)
    ids = prepare(args.data_dir, args.per_class)
    uploads = [p.read_bytes() for p in sorted(CIFAR.glob("*/*.jpg"))[::97][:100]]
    log_path = args.data_dir / "serve.log"

    def by_id(http, rng, bins=20):
        return http.post("/v1/search", json={"image_ids": [rng.choice(ids)], "limit": 10, "histogram_bins": bins})

    def by_id_no_histogram(http, rng):
        return by_id(http, rng, bins=0)

    def by_upload(http, rng):
        return http.post("/v1/search", files={"image": ("q.jpg", rng.choice(uploads), "image/jpeg")},
                         data={"params": json.dumps({"limit": 10})})

    scenarios = [("image_id", by_id), ("image_id, no histogram", by_id_no_histogram), ("upload", by_upload)]
    rows = []
    for threads in args.torch_threads:
        port = free_port()
        server = start_server(args.data_dir, port, log_path, threads)
        base = f"http://127.0.0.1:{port}"
        try:
            probe = httpx.post(f"{base}/v1/search", json={"image_ids": [ids[0]], "limit": 10}, timeout=120).json()
            print(f"serve --torch-threads {threads}: {len(ids)} images; a search: {probe['candidates']} "
                  f"candidates, {'exact' if probe['exact'] else 'HNSW'}, model {probe['model']}", flush=True)
            for name, fn in scenarios:
                for clients in args.clients:
                    total = max(args.requests, clients * 10)
                    r = run_scenario(base, fn, clients, total, args.warmup)
                    rows.append((name, threads or "default", clients, r))
                    print(f"  {name:<24} clients={clients}: p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
                          f"{r['rps']:.1f} req/s, errors {r['errors']} {r['first_error']}", flush=True)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    from tabulate import tabulate

    print()
    print(f"POST /v1/search on {len(ids)} CIFAR-10 test images (efficientnet-lite0, 1280-d), "
          f"visearch serve on 127.0.0.1, {os.cpu_count()} CPU cores")
    print(tabulate(
        [(name, t, c, r["requests"], f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['rps']:.1f}", r["errors"])
         for name, t, c, r in rows],
        headers=["query", "torch threads", "clients", "requests", "p50 ms", "p95 ms", "req/s", "errors"],
    ))


if __name__ == "__main__":
    main()
