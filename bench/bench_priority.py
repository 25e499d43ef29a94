"""Freshness under load: how long an interactive write waits while a bulk backfill drains.

Two parts, on a fresh embedded database with efficientnet-lite0 and CIFAR-10 test images
(32x32 JPEG):

A. Giving way, side by side (``--drain`` images, ``--repeats`` rounds, the two settings
   alternated within each round): ``embed_pending`` in this process with the worker's defaults
   (batch 64, claim 256, decode processes automatic) drains a new model's backlog of
   ``--drain`` images (bulk), while a thread inserts one image by plain SQL (interactive) every
   ``--probe-every`` seconds and times it until its vector is committed. Run with
   ``yield_to_interactive=False`` (before: a claimed round of 256 runs to its end) and ``True``
   (after: interactive items are embedded after the bulk batch in flight), and both again with no inserts
   (the pure bulk rate). Reports the drain's items/s and the probes' waits, and how long the
   run's closing near-duplicate refresh took.

B. One ``visearch worker`` (default options, ``--interval 3600`` so only NOTIFY wakes it):
  1. idle: ``--runs`` inserts, one at a time, into an empty queue;
  2. under load: ``--backlog`` CIFAR-10 test images are ingested (a bulk backfill: queued with
     priority 'bulk'), and while the worker drains them, ``--runs`` inserts by plain SQL (another
     client, priority 'interactive' by default) are timed one at a time; the backlog still
     queued after each is recorded, to show it was draining all along;
  3. without priority (what every insert got before revision 0006): one more insert written as
     bulk (``SET LOCAL visearch.queue_priority = 'bulk'``), so it queues behind the backlog in
     FIFO order; timed up to ``--fifo-timeout`` seconds;
  4. if that insert was searchable (the backlog is drained), while the worker refreshes the
     near-duplicate edges of everything it wrote: one insert (the case that once waited more
     than 300 s).

    python bench/bench_priority.py [--backlog 10000] [--runs 10] [--drain 1000] [--repeats 2]

Time to searchable (B): from the insert's commit until ``search(image_ids=[id])`` answers
(instead of raising NotEmbeddedError), polled every 10 ms. Time to embedded (A): until its
vector row is committed, polled every 20 ms (a cheap lookup, so the poll steals little CPU
from the drain it measures).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

from bench_worker import CIFAR, CLASSES, start_workers, stop_workers, subset, wait_ready
from visearch.config import Settings
from visearch.db.database import open_database
from visearch.db.models import register_model
from visearch.embed import embed_pending
from visearch.embedding import load_model
from visearch.errors import NotEmbeddedError
from visearch.ingest import ingest_folder
from visearch.search import SearchRequest, search


def insert(db, ds: int, n: int, *, bulk: bool = False) -> int:
    """One image written by another client (plain SQL), a CIFAR photo not in the backlog."""
    path = CIFAR / CLASSES[n % len(CLASSES)] / f"{990 + (n // len(CLASSES)) % 10:04d}.jpg"
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


def stats(values: list[float]) -> list[float]:
    """median, p90, max (NaN: a probe that never became searchable counts as the worst)."""
    arr = np.array(values, dtype=float)
    arr = np.where(np.isnan(arr), np.inf, arr)
    return [float(np.median(arr)), float(np.percentile(arr, 90)), float(arr.max())]


class Prober(threading.Thread):
    """Inserts one interactive image every ``every`` s and times it until its vector exists."""

    def __init__(self, db, ds: int, first_n: int, every: float):
        super().__init__(daemon=True)
        self.db, self.ds, self.n, self.every = db, ds, first_n, every
        self.waits: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        with self.db.connect(autocommit=True) as conn:
            while not self.done.wait(self.every):
                image_id = insert(self.db, self.ds, self.n)
                self.n += 1
                t0 = time.perf_counter()
                while not conn.execute("SELECT EXISTS (SELECT 1 FROM image_embeddings WHERE image_id = %s)",
                                       (image_id,)).fetchone()[0]:
                    if self.done.wait(0.02):
                        return  # the drain ended first: not counted
                self.waits.append(time.perf_counter() - t0)


def give_way_side_by_side(db, model, model_id: int, probes_ds: int, args) -> list[list]:
    """Part A; returns table rows. Each round drains the backlog four times: rounds running to
    their end and rounds giving way, each with interactive inserts every ``--probe-every`` s and
    with none (the pure bulk rate, where giving way costs only its per-batch check)."""
    results: dict[tuple[float, bool], list[dict]] = {}
    n = 100
    for rep in range(args.repeats):
        settings = [(every, give_way) for every in (args.probe_every, 0.0) for give_way in (False, True)]
        for every, give_way in (settings if rep % 2 == 0 else settings[::-1]):
            with db.connect(autocommit=True) as conn:  # the same backlog again: a new model's backfill
                conn.execute("DELETE FROM image_embeddings WHERE model_id = %s", (model_id,))
                # dead entries left in the HNSW index would slow every later drain's inserts
                conn.execute("VACUUM image_embeddings")
                conn.execute("SELECT enqueue_model_backlog(%s)", (model_id,))
            bulk = queued(db)
            prober = Prober(db, probes_ds, n, every) if every else None
            batches: list[float] = []
            t0 = time.perf_counter()
            if prober:
                prober.start()
            report = embed_pending(db, model, batch_size=64, claim_size=256, progress=False,
                                   record_progress=False, yield_to_interactive=give_way,
                                   on_batch=lambda _items, _s: batches.append(time.perf_counter()))
            seconds = time.perf_counter() - t0
            waits = []
            if prober:
                prober.done.set()
                prober.join()
                n, waits = prober.n, prober.waits
            results.setdefault((every, give_way), []).append({
                "bulk": bulk, "seconds": seconds, "rate": report.total_embedded / seconds,
                "embed_rate": report.total_embedded / (batches[-1] - t0),
                "refresh": t0 + seconds - batches[-1], "waits": waits, "served": report.served_between,
            })
            print(f"  round {rep + 1}, probes every {every:g} s, give way {give_way}: {report.total_embedded} items"
                  f" in {seconds:.1f} s, probes {[round(w, 2) for w in waits]}", file=sys.stderr)
    rows = []
    for (every, give_way), runs in results.items():
        waits = [w for r in runs for w in r["waits"]]
        rows.append([
            "interactive served after the batch in flight (after)" if give_way
            else "bulk batches back to back (before)",
            f"every {every:g} s" if every else "none", len(runs), runs[0]["bulk"],
            *(round(statistics.median(r[k] for r in runs), 2) for k in ("rate", "embed_rate", "refresh")),
            sum(r["served"] for r in runs),
            len(waits), *([round(v, 2) for v in stats(waits)] if waits else ["-", "-", "-"]),
        ])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=10_000, help="CIFAR images queued as a backfill (multiple of 10)")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fifo-timeout", type=float, default=600.0)
    parser.add_argument("--drain", type=int, default=1000, help="part A: images drained per run (multiple of 10; 0: skip A)")
    parser.add_argument("--repeats", type=int, default=2, help="part A: rounds of (before, after)")
    parser.add_argument("--probe-every", type=float, default=2.0, help="part A: seconds between interactive inserts")
    parser.add_argument("--skip-worker", action="store_true", help="part A only")
    args = parser.parse_args()
    if not CIFAR.exists():
        sys.exit(f"missing {CIFAR}")
    with tempfile.TemporaryDirectory(prefix="bench-priority-") as tmp_name:
        tmp = Path(tmp_name)
        db = open_database(Settings(data_dir=tmp / "data", database_url=None))
        model = load_model("efficientnet-lite0")
        with db.transaction() as conn:
            model_id = register_model(conn, model.name, model.dim, model.embeds_text).id
            ds = conn.execute("INSERT INTO datasets (name) VALUES ('probes') RETURNING id").fetchone()[0]
        part_a = []
        if args.drain:
            # its own images (1000..): part B's backlog starts at 0
            ingest_folder(db, "drain", subset(tmp / "drain", args.drain // len(CLASSES), 1000 - args.drain // len(CLASSES)),
                          progress=False)
            part_a = give_way_side_by_side(db, model, model_id, ds, args)
            print("\nA. a bulk drain, with and without interactive inserts, side by side"
                  " (embed_pending in process: batch 64, claim 256; items/s are medians over the runs)")
            print(tabulate(part_a, floatfmt=".2f", headers=[
                "bulk round", "interactive inserts", "runs", "bulk items", "items/s (whole run)", "items/s (to last batch)",
                "closing refresh s", "times served between batches", "probes", "probe median s", "p90 s", "max s"]),
                  flush=True)
        if args.skip_worker:
            return
        with db.transaction() as conn:  # part B: only its own backlog is drained
            conn.execute("UPDATE datasets SET search_enabled = false WHERE name = 'drain'")
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
                print(f"  probe {n - args.runs + 1}: {loaded[-1]:.2f} s, {left[-1]} queued", file=sys.stderr)
                time.sleep(0.3)
            fifo_left = queued(db)
            fifo = until_searchable(db, insert(db, ds, 2 * args.runs, bulk=True), args.fifo_timeout)
            pending, refreshing = None, float("nan")
            if fifo == fifo:  # not NaN: the backlog is drained (the FIFO insert was its last item)
                # and the worker is now refreshing the near-duplicate edges of all it wrote
                with db.connect() as conn:
                    pending = conn.execute("SELECT count(*) FROM neighbour_pending").fetchone()[0]
                refreshing = until_searchable(db, insert(db, ds, 2 * args.runs + 1), 300)
        finally:
            stop_workers(procs)
    rows = [
        ["idle (empty queue)", args.runs, *stats(idle), 0],
        [f"{args.backlog} bulk items draining, insert interactive (default)", args.runs,
         *stats(loaded), f"{min(left)}-{max(left)}"],
        ["same backlog, insert queued as bulk (FIFO: before 0006)", 1, fifo, fifo, fifo, fifo_left],
    ]
    if pending is not None:
        rows.append([f"backlog drained, worker refreshing near-duplicate edges ({pending} pending)", 1,
                     refreshing, refreshing, refreshing, 0])
    print("\nB. time from an SQL insert's commit to searchable, 1 worker (default options), "
          "efficientnet-lite0, CIFAR-10 32x32 JPEG")
    print(tabulate(rows, headers=["case", "inserts", "median s", "p90 s", "max s", "backlog queued meanwhile"],
                   floatfmt=".2f"))


if __name__ == "__main__":
    main()
