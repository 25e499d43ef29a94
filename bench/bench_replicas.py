"""Requests/s of ``POST /v1/search`` with 8 clients: primary only vs primary + 1 streaming replica.

End to end, on this machine (it stops by itself):

1. Starts a PostgreSQL primary and a hot standby streaming from it on 127.0.0.1
   (``tests/pg_replica.py``: the embedded server's own ``initdb`` and ``pg_basebackup -R``).
2. Loads ``--vectors`` synthetic clustered 512-d unit vectors as images of one model on the
   primary (binary COPY), builds the model's HNSW index, waits until the standby has replayed it.
3. Runs ``visearch serve`` against the primary, once without and once with
   ``VISEARCH_READ_DATABASE_URLS=<standby>``, and sends ``--requests`` searches
   (``{"image_ids": [random], "limit": 10}``, 20-bin histogram, HNSW) from 8 keep-alive clients.
   The replica's share is read from both servers' ``pg_stat_database`` transaction counters.

Both servers run on the same cores as visearch serve and the clients: the ratio here says what
routing costs and whether the replica takes the reads; it cannot show the capacity a replica adds
on its own machine (see README "Scaling").

Usage:  python bench/bench_replicas.py [--vectors 20000] [--requests 400]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from bench_http import free_port, run_scenario  # noqa: E402
from pg_replica import start_replicated_pair  # noqa: E402
from synthetic_vectors import clustered_unit_vectors, load_vectors  # noqa: E402

MODEL = "synthetic-512"


def transactions(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                            " WHERE datname = current_database()").fetchone()[0]


def serve(primary_url: str, replica_urls: list[str], log_path: Path):
    import subprocess

    import httpx

    port = free_port()
    env = os.environ | {"VISEARCH_DATABASE_URL": primary_url, "VISEARCH_READ_DATABASE_URLS": ",".join(replica_urls),
                        "VISEARCH_MODEL": MODEL}
    env.pop("VISEARCH_API_KEYS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "visearch", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--log-level", "warning"],
        env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"visearch serve exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    sys.exit("visearch serve did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vectors", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()

    pair = start_replicated_pair({"shared_buffers": "'256MB'", "maintenance_work_mem": "'512MB'"})
    try:
        from visearch.config import Settings
        from visearch.db.database import open_database
        from visearch.db.vectors import ensure_hnsw_index

        db = open_database(Settings(database_url=pair.primary.url))
        vectors = clustered_unit_vectors(args.vectors, 512)
        with db.connect() as conn:
            model_id = load_vectors(conn, vectors, model=MODEL)
            ensure_hnsw_index(conn, "image", model_id)
            conn.commit()
        db.close()
        pair.wait_replayed(timeout=300)

        def by_id(http, rng):
            return http.post("/v1/search", json={"image_ids": [rng.randint(1, args.vectors)], "limit": 10})

        rows = []
        log = Path(tempfile.mkdtemp(prefix="bench-replicas-")) / "serve.log"
        for label, replicas in (("primary only", []), ("primary + 1 replica", [pair.replica.url])):
            proc, base = serve(pair.primary.url, replicas, log)
            try:
                before = transactions(pair.primary.url), transactions(pair.replica.url)
                r = run_scenario(base, by_id, args.clients, args.requests, warmup=3)
                after = transactions(pair.primary.url), transactions(pair.replica.url)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            on_primary, on_replica = after[0] - before[0], after[1] - before[1]
            rows.append((label, r, on_replica / max(1, on_primary + on_replica)))
    finally:
        pair.close()

    print(f"\nPOST /v1/search, {args.clients} clients, {args.requests} requests, {args.vectors:,} x 512-d "
          f"vectors (HNSW), primary + standby + visearch serve + clients on one machine, {os.cpu_count()} cores")
    print(f"{'setup':22} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'errors':>6} {'replica share of transactions':>30}")
    for label, r, share in rows:
        print(f"{label:22} {r['rps']:7.1f} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f} {r['errors']:6d} {share:30.0%}")
    print(f"ratio (primary + replica) / (primary only): {rows[1][1]['rps'] / rows[0][1]['rps']:.2f}")


if __name__ == "__main__":
    main()
