"""Curation benchmarks: diverse sampling cost, near-duplicate P/R and cost, label-error suspects.

    python bench/bench_curation.py                      # everything (about 10 min on 2 cores)
    python bench/bench_curation.py --parts sample       # only the sampling timings

Parts:
- ``sample``: ``diverse_sample`` (n = 50, centroids) over 10,000 and 100,000 1280-d unit vectors
  stored in PostgreSQL (synthetic: a mixture of 200 Gaussian clusters on the sphere; the cost
  does not depend on what the vectors show), split into fetch (binary) and k-means + assignment.
- ``duplicates``: 500 CIFAR-10 test images (50 per class) and four copies of each (JPEG q=60,
  0.5x resize, 90% centre crop, horizontal flip), embedded with efficientnet-lite0; precision and
  recall of the groups per transformation at the default threshold; then the cost of keeping
  the neighbour edges (HNSW k-NN per item) on the synthetic 10k / 100k sets.
- ``suspects``: coco128's 939 boxes with 5% of labels flipped; precision@N of the suspects
  list for N = number of flips, against chance (5%).

Numbers are one run on a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests"))


def _open(tmp: Path):
    from visearch.config import Settings
    from visearch.db.database import open_database

    tmp.chmod(0o755)
    settings = Settings(data_dir=tmp, model="efficientnet-lite0")
    return settings, open_database(settings)


def _truncate(db):
    from conftest import truncate_all

    truncate_all(db)


def synthetic(db, n: int, dim: int = 1280, clusters: int = 200, seed: int = 0, dataset: str = "synthetic",
              index: bool = True) -> float:
    """Insert ``n`` image rows with synthetic unit vectors for a model 'synthetic-1280'; build
    its HNSW index if ``index``; return the index build seconds."""
    from visearch.db.models import register_model
    from visearch.db.vectors import ensure_hnsw_index, write_vectors

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    with db.transaction() as conn:
        model = register_model(conn, "synthetic-1280", dim, False)
        conn.execute("UPDATE embedding_models SET is_active = false WHERE id = %s", (model.id,))
        ds = conn.execute("INSERT INTO datasets (name) VALUES (%s) RETURNING id", (dataset,)).fetchone()[0]
    step = 10_000
    for start in range(0, n, step):
        m = min(step, n - start)
        vec = centres[rng.integers(clusters, size=m)] + 0.6 * rng.normal(size=(m, dim)).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        with db.transaction() as conn:
            ids = [r[0] for r in conn.execute(
                "INSERT INTO images (dataset_id, sha256, width, height, format)"
                " SELECT %s, sha256(int8send(g)), 32, 32, 'PNG' FROM generate_series(%s::bigint, %s::bigint) g RETURNING id",
                (ds, start, start + m - 1)).fetchall()]
            write_vectors(conn, model_id=model.id, item_kind="image", item_ids=ids, vectors=vec)
            conn.execute("DELETE FROM neighbour_pending WHERE model_id = %s", (model.id,))
    t0 = time.perf_counter()
    with db.connect(autocommit=True) as conn:
        conn.execute("ANALYZE image_embeddings")
        if index:
            conn.execute("SET maintenance_work_mem = '2GB'")
            ensure_hnsw_index(conn, "image", model.id)
    return time.perf_counter() - t0


def bench_sample(db, settings, sizes):
    from visearch.curation import diverse_sample
    from visearch.search import SearchRequest

    rows = []
    for n in sizes:
        _truncate(db)
        synthetic(db, n, index=False)
        req = SearchRequest(datasets=("synthetic",), model="synthetic-1280")
        for method in ("centroids", "random"):
            t0 = time.perf_counter()
            result = diverse_sample(db, req, 50, method=method, settings=settings)
            total = time.perf_counter() - t0
            rows.append((n, method, len(result.hits), result.fitted_on, f"{result.seconds['fetch']:.2f}",
                         f"{result.seconds['kmeans']:.2f}", f"{result.seconds['kmeans_cpu']:.2f}", f"{total:.2f}",
                         "< 10" if n >= 100_000 else "< 2"))
    load = os.getloadavg()[0]
    print(f"\n## Diverse sample, n = 50, 1280-d vectors in PostgreSQL (load average {load:.1f}, "
          f"{os.cpu_count()} cores)\n")
    print(tabulate(rows, headers=["items", "method", "picked", "fitted on", "fetch s", "k-means+assign s",
                                  "k-means CPU s", "total s", "target s"], tablefmt="github"))


def transformed(image: Image.Image, how: str) -> bytes:
    out = io.BytesIO()
    if how == "jpeg60":
        image.save(out, "JPEG", quality=60)
    elif how == "half":
        image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.BILINEAR).save(out, "PNG")
    elif how == "crop90":
        w, h = image.size
        dx, dy = round(w * 0.05), round(h * 0.05)
        image.crop((dx, dy, w - dx, h - dy)).save(out, "PNG")
    else:
        ImageOps.mirror(image).save(out, "PNG")
    return out.getvalue()


def bench_duplicates(db, settings, per_class: int, sizes):
    from visearch.curation import find_duplicates
    from visearch.curation.duplicates import DEFAULT_THRESHOLD, refresh_neighbours
    from visearch.embed import embed_pending
    from visearch.embedding import load_model
    from visearch.ingest import ingest_folder

    transforms = ("jpeg60", "half", "crop90", "flip")
    _truncate(db)
    work = Path(tempfile.mkdtemp(prefix="bench-dups-"))
    origin = {}  # file stem -> (original stem, transform)
    cifar = DATA / "cifar10-test"
    for label in sorted(p.name for p in cifar.iterdir() if p.is_dir()):
        for f in sorted((cifar / label).iterdir())[:per_class]:
            stem = f"{label}_{f.stem}"
            (work / f"{stem}.png").write_bytes(_png(Image.open(f).convert("RGB")))
            origin[stem] = (stem, "original")
            image = Image.open(f).convert("RGB")
            for how in transforms:
                name = f"{stem}__{how}"
                (work / f"{name}.{'jpg' if how == 'jpeg60' else 'png'}").write_bytes(transformed(image, how))
                origin[name] = (stem, how)
    ingest_folder(db, "dups", work, progress=False)
    t0 = time.perf_counter()
    report = embed_pending(db, load_model("efficientnet-lite0"), progress=False)
    embed_s = time.perf_counter() - t0
    with db.connect() as conn:
        stem_of = {i: Path(f).stem for i, f in conn.execute("SELECT id, file_name FROM images")}
    t0 = time.perf_counter()
    dup = find_duplicates(db, "dups", threshold=DEFAULT_THRESHOLD, settings=settings)
    query_s = time.perf_counter() - t0
    group_of = {}
    for g, group in enumerate(dup.groups):
        for m in group.members:
            group_of[m.item_id] = g
    members = {}
    for item, g in group_of.items():
        members.setdefault(g, []).append(item)
    rows = []
    for how in transforms:
        tp = fp = fn = 0
        for item, stem in stem_of.items():
            root, kind = origin[stem]
            if kind != how:
                continue
            relatives = {i for i, s in stem_of.items() if origin[s][0] == root and i != item}
            predicted = set(members.get(group_of.get(item, -1), [])) - {item}
            tp += len(predicted & relatives)
            fp += len(predicted - relatives)
            fn += len(relatives - predicted)
        rows.append((how, f"{tp / max(1, tp + fp):.3f}", f"{tp / max(1, tp + fn):.3f}", tp, fp, fn))
    print(f"\n## Near-duplicates: {per_class * 10} CIFAR-10 images + 4 copies each, threshold "
          f"{DEFAULT_THRESHOLD} (efficientnet-lite0; {report.total_embedded} embedded in {embed_s:.0f} s "
          f"incl. edges; query {query_s:.2f} s; {len(dup.groups)} groups)\n")
    print("Pairs (copy, item in the same group) counted per copy's transformation: precision = "
          "share of its group-mates that are its original or a sibling copy; recall = share of those found.\n")
    print(tabulate(rows, headers=["transformation", "precision", "recall", "TP", "FP", "FN"], tablefmt="github"))

    cost = []
    for n in sizes:
        _truncate(db)
        build = synthetic(db, n, dataset="synthetic")
        with db.connect(autocommit=True) as conn:
            model_id = conn.execute("SELECT id FROM embedding_models WHERE name = 'synthetic-1280'").fetchone()[0]
            sample_n = min(n, 2000)
            conn.execute("INSERT INTO neighbour_pending SELECT %s, 'image', image_id FROM image_embeddings"
                         " WHERE model_id = %s ORDER BY image_id DESC LIMIT %s", (model_id, model_id, sample_n))
            t0 = time.perf_counter()
            done = refresh_neighbours(conn, model_id, ("image",))
            secs = time.perf_counter() - t0
        cost.append((n, f"{build:.1f}", done, f"{secs:.2f}", f"{done / secs:.0f}", f"{n / (done / secs):.0f}"))
    print("\n## Keeping neighbour edges: HNSW k-NN (k = 10) per new item, synthetic 1280-d\n")
    print(tabulate(cost, headers=["items in index", "HNSW build s", "items looked up", "seconds", "items/s",
                                  "all items from scratch, s (extrapolated)"], tablefmt="github"))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def bench_suspects(db, settings, flip_share: float = 0.05):
    from conftest import ingest_coco128_embedded

    from visearch.curation import label_error_suspects

    ingest_coco128_embedded(db, DATA / "coco128", boxes_of_images=128)
    rng = np.random.default_rng(0)
    with db.connect() as conn:
        rows = conn.execute("SELECT a.id, a.concept_id FROM annotations a JOIN object_embeddings e"
                            " ON e.annotation_id = a.id ORDER BY a.id").fetchall()
        concepts = [r[0] for r in conn.execute("SELECT DISTINCT concept_id FROM annotations")]
        flips = rng.choice(len(rows), round(flip_share * len(rows)), replace=False)
        for j in flips:
            ann, concept = rows[j]
            other = rng.choice([c for c in concepts if c != concept])
            conn.execute("UPDATE annotations SET concept_id = %s WHERE id = %s", (int(other), ann))
        conn.commit()
    flipped = {rows[j][0] for j in flips}
    out = []
    for k, share in ((10, 0.5), (5, 0.6)):
        t0 = time.perf_counter()
        found = label_error_suspects(db, "coco128", objects=True, k=k, min_share=share, settings=settings)
        secs = time.perf_counter() - t0
        for n in (10, 20, len(flipped)):
            top = [s.item_id for s in found[:n]]
            out.append((k, share, len(found), n, f"{len(set(top) & flipped) / n:.3f}", f"{len(flipped) / len(rows):.3f}",
                        f"{secs:.2f}"))
    print(f"\n## Label-error suspects: coco128, {len(rows)} boxes, {len(flipped)} labels flipped to a random "
          f"other concept\n")
    print(tabulate(out, headers=["k", "min share", "suspects", "N", "precision@N", "chance", "query s"],
                   tablefmt="github"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="sample,duplicates,suspects")
    p.add_argument("--sizes", default="10000,100000", help="synthetic vector counts")
    p.add_argument("--per-class", type=int, default=50, help="CIFAR-10 images per class for duplicates")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-curation-"))
    settings, db = _open(tmp)
    try:
        parts = args.parts.split(",")
        if "sample" in parts:
            bench_sample(db, settings, sizes)
        if "duplicates" in parts:
            bench_duplicates(db, settings, args.per_class, sizes)
        if "suspects" in parts:
            bench_suspects(db, settings)
    finally:
        db.close()
        from visearch.db.embedded import release_embedded_server

        release_embedded_server(tmp)


if __name__ == "__main__":
    main()
