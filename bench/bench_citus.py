"""One node vs Citus with 1 and 2 workers, same data: bulk load, HNSW build, search latency, recall.

Needs a running Citus cluster: ``--citus`` is a postgresql:// URL of a database on its
coordinator whose ``pg_dist_node`` lists the workers (see README "Scaling"). For each setup a
fresh database is created on every node, visearch's schema migrated (and, on Citus,
``visearch db distribute`` run with ``--shards`` shards), then:

* **load**: ``--vectors`` synthetic clustered 512-d unit vectors as images + labels + vectors
  of one model, binary COPY (``tests/synthetic_vectors.py``): rows/s of vectors;
* **index**: the model's HNSW index (m 16, ef_construction 64), seconds (on Citus: every shard);
* **search**: ``--queries`` searches through visearch's search service by a random stored image:
  unfiltered, and filtered to 1% and 0.1% of the images by a concept; p50/p95 ms with the
  service's own choice (HNSW or exact), and recall@10 of HNSW (``exact=False``) against exact.

"One node" is the coordinator's own PostgreSQL without distribution: same server, same settings.
All nodes share this machine's cores, so Citus's gains from parallel shards are bounded by them.

``--data cifar`` uses the 10,000 real CIFAR-10 test images instead: their efficientnet-lite0
vectors (1280-d) are computed once with visearch's model and kept in ``--cifar-cache`` (an .npy
file outside the repository); the 1% / 0.1% filters are the same id-based concepts.

Usage:  python bench/bench_citus.py --citus postgresql://postgres@127.0.0.1:55430/visearch
            [--vectors 100000] [--queries 50] [--shards 8] [--setups single,citus1,citus2]
            [--data synthetic|cifar] [--cifar-cache /tmp/cifar10-efficientnet-lite0.npy]
            [--maintenance-work-mem 1GB]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import psycopg
import psycopg.sql

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

from citus_cluster import create_database, drop_database  # noqa: E402
from synthetic_vectors import ONE_PERCENT, TENTH_PERCENT, clustered_unit_vectors, load_vectors  # noqa: E402

MODEL = "bench-vectors"


def plain_database(base_url: str) -> str:
    """A database on the coordinator's server without Citus (the one-node setup)."""
    from urllib.parse import urlsplit, urlunsplit
    import uuid

    name = "visearch_single_" + uuid.uuid4().hex[:8]
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(base_url)._replace(path="/" + name))


def drop_plain(base_url: str, url: str) -> None:
    from urllib.parse import urlsplit

    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * len(values))) - 1)]


def cifar_vectors(cache: Path):
    """``(10000, 1280)`` float32 unit vectors of ../shared/data/cifar10-test (files in sorted
    order) by efficientnet-lite0, cached in ``cache``."""
    import numpy as np

    if cache.exists():
        return np.load(cache)
    from PIL import Image

    from visearch.embedding import load_model

    files = sorted((ROOT.parent / "shared" / "data" / "cifar10-test").glob("*/*.jpg"))
    if not files:
        sys.exit("missing ../shared/data/cifar10-test: see ../shared/data/README.md")
    model = load_model("efficientnet-lite0")
    parts = []
    for start in range(0, len(files), 256):
        images = [Image.open(f).convert("RGB") for f in files[start:start + 256]]
        parts.append(model.embed_images(images))
    vectors = np.concatenate(parts).astype(np.float32)
    np.save(cache, vectors)
    return vectors


def measure(url: str, vectors, *, distributed: bool, shards: int, queries: int,
            maintenance_work_mem: str = "1GB") -> dict:
    from visearch.config import Settings
    from visearch.db.citus import distribute
    from visearch.db.database import open_database
    from visearch.db.vectors import ensure_hnsw_index
    from visearch.search import SearchRequest, search

    db = open_database(Settings(database_url=url))
    if distributed:
        distribute(url, shard_count=shards)
    out = {}
    with db.connect() as conn:
        t = time.perf_counter()
        model_id = load_vectors(conn, vectors, model=MODEL)
        out["load_rows_s"] = len(vectors) / (time.perf_counter() - t)
        progress(f"loaded {len(vectors):,} vectors: {out['load_rows_s']:,.0f} rows/s")
        # the build's memory as the database's default: Citus passes ALTER DATABASE on to every
        # worker, whose sessions build the shards' indexes (a SET here reaches no shard)
        conn.execute(psycopg.sql.SQL("ALTER DATABASE {} SET maintenance_work_mem = {}").format(
            psycopg.sql.Identifier(conn.info.dbname), psycopg.sql.Literal(maintenance_work_mem)))
        conn.execute(psycopg.sql.SQL("SET maintenance_work_mem = {}").format(psycopg.sql.Literal(maintenance_work_mem)))
        conn.commit()
        t = time.perf_counter()
        ensure_hnsw_index(conn, "image", model_id)
        conn.commit()
        out["index_s"] = time.perf_counter() - t
        progress(f"HNSW index built: {out['index_s']:.1f} s")
    rng = random.Random(0)
    ids = [rng.randint(1, len(vectors)) for _ in range(queries)]
    for label, concepts in (("all", []), ("1%", [ONE_PERCENT]), ("0.1%", [TENTH_PERCENT])):
        search(db, SearchRequest(image_ids=[ids[0]], limit=10, model=MODEL, concepts=concepts))  # warm
        lat, modes, hits = [], set(), 0
        for image_id in ids:
            req = SearchRequest(image_ids=[image_id], limit=10, model=MODEL, concepts=concepts)
            t = time.perf_counter()
            r = search(db, req)
            lat.append((time.perf_counter() - t) * 1000)
            modes.add("exact" if r.exact else "hnsw")
            exact = {h.image_id for h in search(db, SearchRequest(image_ids=[image_id], limit=10, model=MODEL,
                                                                  concepts=concepts, exact=True)).hits}
            approx = search(db, SearchRequest(image_ids=[image_id], limit=10, model=MODEL, concepts=concepts,
                                              exact=False))
            hits += len(exact & {h.image_id for h in approx.hits}) / max(1, min(10, len(exact)))
        out[label] = {"p50": statistics.median(lat), "p95": pct(lat, 0.95), "mode": "/".join(sorted(modes)),
                      "recall": hits / len(ids)}
        progress(f"filter {label}: p50 {out[label]['p50']:.1f} ms, recall@10 {out[label]['recall']:.3f}")
    db.close()
    return out


def progress(message: str) -> None:
    """A timestamped line as each phase ends (a 1M run takes many minutes)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--citus", required=True, help="URL of a database on the Citus coordinator")
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--setups", default="single,citus1,citus2")
    ap.add_argument("--data", choices=("synthetic", "cifar"), default="synthetic")
    ap.add_argument("--cifar-cache", type=Path, default=Path("/tmp/cifar10-efficientnet-lite0.npy"))
    ap.add_argument("--maintenance-work-mem", default="1GB",
                    help="for the HNSW build, on every node (a graph larger than it builds much slower)")
    args = ap.parse_args()
    if args.data == "cifar":
        vectors = cifar_vectors(args.cifar_cache)
        args.vectors = len(vectors)
    else:
        vectors = clustered_unit_vectors(args.vectors, 512, clusters=1000)
        progress(f"{len(vectors):,} synthetic vectors made")
    args.dim = vectors.shape[1]
    results = {}
    for setup in args.setups.split(","):
        if setup == "single":
            url = plain_database(args.citus)
            try:
                results["1 node"] = measure(url, vectors, distributed=False, shards=0, queries=args.queries,
                                            maintenance_work_mem=args.maintenance_work_mem)
            finally:
                drop_plain(args.citus, url)
        else:
            workers = int(setup.removeprefix("citus"))
            url = create_database(args.citus, workers=workers, prefix="visearch_bench_")
            try:
                results[f"Citus, {workers} worker{'s' if workers > 1 else ''}"] = measure(
                    url, vectors, distributed=True, shards=args.shards, queries=args.queries,
                    maintenance_work_mem=args.maintenance_work_mem)
            finally:
                drop_database(args.citus, url)
        print_table(results, args, final=False)  # each setup as it finishes: a run takes long
    print_table(results, args, final=True)


def print_table(results: dict, args, *, final: bool) -> None:
    if final:
        kind = "CIFAR-10 test images (efficientnet-lite0)" if args.data == "cifar" else "clustered unit vectors"
        print(f"\n{args.vectors:,} x {args.dim}-d {kind}, {args.queries} queries per row, "
              f"{args.shards} shards on Citus, every node on this machine ({os.cpu_count()} cores)")
    print(f"{'setup':18} {'load rows/s':>11} {'index s':>8} | {'filter':>6} {'served by':>10} {'p50 ms':>7} "
          f"{'p95 ms':>7} {'HNSW recall@10':>14}", flush=True)
    for name, r in results.items():
        for i, label in enumerate(("all", "1%", "0.1%")):
            head = f"{name:18} {r['load_rows_s']:11,.0f} {r['index_s']:8.1f}" if i == 0 else " " * 39
            s = r[label]
            print(f"{head} | {label:>6} {s['mode']:>10} {s['p50']:7.1f} {s['p95']:7.1f} {s['recall']:14.3f}", flush=True)


if __name__ == "__main__":
    main()
