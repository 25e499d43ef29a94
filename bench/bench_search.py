"""Search benchmark on the 10,000 CIFAR-10 test images (efficientnet-lite0 vectors, 1280-d).

For image -> images queries it measures, side by side in one run:
  * latency p50/p95 of visearch's search() (the whole call: filters, count, ranking statement),
    exact scan vs the HNSW index at several ef_search values;
  * recall@10 of the HNSW answers against the exact ones;
  * the same with a 10% filter (#cat, one class) and a 1% filter (#bench_rare, 100 images),
    forced through the index and as visearch chooses (exact when the filter is selective);
  * precision@10 against the CIFAR-10 class labels (the query image itself excluded);
  * optionally a FAISS baseline (IndexFlatIP exact, IndexHNSWFlat) on the same vectors, in process.

The first run ingests and embeds the images into a persistent embedded database under
``.visearch/bench`` (several minutes on 2 CPU cores); later runs reuse it.

    python bench/bench_search.py [--queries 200] [--data-dir .visearch/bench]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

from visearch.config import Settings
from visearch.db.database import open_database
from visearch.embed import embed_pending
from visearch.embedding import load_model
from visearch.ingest import ingest_folder
from visearch.search import SearchRequest, search

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-test"
DATASET = "cifar10-test"
MODEL = "efficientnet-lite0"


def prepare(db, settings) -> None:
    """Ingest and embed CIFAR-10 test once; label 100 images #bench_rare for the 1% filter."""
    with db.connect() as conn:
        have = conn.execute(
            "SELECT count(*) FROM images i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = %s",
            (DATASET,),
        ).fetchone()[0]
    if have < 10_000:
        if not CIFAR.exists():
            sys.exit(f"missing {CIFAR}: see ../shared/data/README.md")
        print(ingest_folder(db, DATASET, CIFAR, labels_from_folders=True).summary())
    model = load_model(MODEL)
    report = embed_pending(db, model, batch_size=settings.batch_size)
    if report.total_embedded:
        print(report.summary())
    with db.transaction() as conn:
        conn.execute("INSERT INTO concepts (name) VALUES ('bench_rare') ON CONFLICT DO NOTHING")
        conn.execute(
            "INSERT INTO image_labels (image_id, concept_id, source)"
            " SELECT i.id, (SELECT id FROM concepts WHERE name = 'bench_rare'), 'bench'"
            " FROM images i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = %s"
            " ORDER BY i.id LIMIT 100 ON CONFLICT DO NOTHING",
            (DATASET,),
        )
        conn.execute("ANALYZE")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1000


def pct(values, q):
    return float(np.percentile(values, q))


def run_case(db, settings, queries, *, concepts=(), exact, ef_search=None, truth=None):
    s = settings if ef_search is None else settings.model_copy(update={"hnsw_ef_search": ef_search})
    latencies, answers, chosen_exact = [], [], []
    for image_id in queries:
        req = SearchRequest(image_ids=[image_id], concepts=list(concepts), datasets=[DATASET],
                            limit=10, exact=exact, model=MODEL)
        result, ms = timed(lambda: search(db, req, s))
        latencies.append(ms)
        answers.append([h.image_id for h in result.hits])
        chosen_exact.append(result.exact)
    row = {
        "p50 ms": pct(latencies, 50),
        "p95 ms": pct(latencies, 95),
        "rows": statistics.mean(len(a) for a in answers),
        "answered exactly": f"{sum(chosen_exact)}/{len(chosen_exact)}",
    }
    if truth is not None:
        row["recall@10"] = statistics.mean(
            len(set(a) & set(t)) / max(1, len(t)) for a, t in zip(answers, truth)
        )
    return row, answers


def precision_at_10(db, queries, answers) -> float:
    with db.connect() as conn:
        label = dict(conn.execute(
            "SELECT l.image_id, l.concept_id FROM image_labels l WHERE l.source = 'folder'"
        ).fetchall())
    scores = []
    for q, answer in zip(queries, answers):
        others = [a for a in answer if a != q][:9]
        scores.append(sum(label.get(a) == label[q] for a in others) / max(1, len(others)))
    return statistics.mean(scores)


def faiss_rows(db, queries, truth_ids):
    try:
        import faiss
    except ImportError:
        return []
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT e.image_id, e.embedding FROM image_embeddings e JOIN embedding_models m ON m.id = e.model_id"
            " WHERE m.name = %s ORDER BY e.image_id", (MODEL,)).fetchall()
    ids = np.array([r[0] for r in rows])
    x = np.stack([r[1].to_numpy() for r in rows]).astype(np.float32)
    pos = {i: k for k, i in enumerate(ids)}
    out = []
    for name, index in (("faiss IndexFlatIP (exact)", faiss.IndexFlatIP(x.shape[1])),
                        ("faiss IndexHNSWFlat M=16 efSearch=40", faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT))):
        index.add(x)
        lat, answers = [], []
        for q in queries:
            (_, found), ms = timed(lambda: index.search(x[pos[q]][None, :], 10))
            lat.append(ms)
            answers.append(list(ids[found[0]]))
        recall = statistics.mean(len(set(a) & set(t)) / 10 for a, t in zip(answers, truth_ids))
        out.append({"case": name, "p50 ms": pct(lat, 50), "p95 ms": pct(lat, 95), "rows": 10.0,
                    "recall@10": recall, "answered exactly": "-"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".visearch" / "bench")
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    settings = Settings(data_dir=args.data_dir, database_url=args.database_url, model=MODEL)
    db = open_database(settings)
    prepare(db, settings)
    with db.connect() as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT i.id FROM images i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = %s ORDER BY i.id",
            (DATASET,))]
    rng = np.random.default_rng(0)
    queries = [int(i) for i in rng.choice(ids, size=args.queries, replace=False)]

    table = []
    cases = [("no filter", ()), ("10% filter #cat", ("cat",)), ("1% filter #bench_rare", ("bench_rare",))]
    for name, concepts in cases:
        exact_row, truth = run_case(db, settings, queries, concepts=concepts, exact=True)
        table.append({"case": f"{name}: exact scan", **exact_row, "recall@10": 1.0})
        if not concepts:
            p10 = precision_at_10(db, queries, truth)
        for ef in (40, 100, 200):
            row, _ = run_case(db, settings, queries, concepts=concepts, exact=False, ef_search=ef, truth=truth)
            table.append({"case": f"{name}: HNSW ef_search={ef}", **row})
        if concepts:
            row, _ = run_case(db, settings, queries, concepts=concepts, exact=None, truth=truth)
            table.append({"case": f"{name}: visearch's choice", **row})
        if not concepts:
            table += faiss_rows(db, queries, truth)
    cols = ["case", "p50 ms", "p95 ms", "recall@10", "rows", "answered exactly"]
    print(f"\nimage -> images, k=10, {len(queries)} queries, {len(ids)} CIFAR-10 test images, {MODEL} (1280-d)")
    print(tabulate([[r.get(c, "") for c in cols] for r in table], headers=cols, floatfmt=".3f"))
    print(f"\nprecision@10 against the CIFAR-10 class (exact search, query excluded): {p10:.3f}")


if __name__ == "__main__":
    main()
