"""Curation benchmarks: diverse sampling cost, near-duplicate P/R and cost, label-error suspects.

    python bench/bench_curation.py                      # everything (about 10 min on 2 cores)
    python bench/bench_curation.py --parts sample       # only the sampling timings

Parts:
- ``sample``: a 50-item sample kept as the temporary collection (``sample_to_collection``), both
  methods, over 10,000 and 100,000 1280-d unit vectors stored in PostgreSQL (synthetic: a
  mixture of 200 Gaussian clusters on the sphere; the cost does not depend on what the vectors
  show), split into fetch (binary COPY) / fit / assign / write, next to FAISS k-means on the
  same vectors in memory (the floor).
- ``duplicates``: the 208 coco photos of coco128 and coco-mini (``--source cifar``: CIFAR-10 test
  images, ``--per-class`` of each class) and four copies of each (JPEG q=60, 0.5x resize, 90%
  centre crop, horizontal flip), embedded with efficientnet-lite0; precision and recall of the
  groups per transformation at thresholds 0.95, 0.90 and 0.85.
- ``edges``: the cost of keeping the neighbour edges for a new batch of ``--batch`` vectors
  written into an indexed dataset of 10k / 100k synthetic vectors (5% near-copies), and the full
  duplicates query over it.
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
              index: bool = True, keep: list | None = None, near_copies: float = 0.0, first: int = 0,
              pairs: list | None = None, finish: bool = True) -> float:
    """Insert ``n`` image rows with synthetic unit vectors for a model 'synthetic-1280' (created
    with the dataset when missing); build its HNSW index if ``index``; return the index build
    seconds. ``keep``: a list that receives the vectors, (n, dim) float32 by image id, chunk by
    chunk. ``near_copies``: this share of the rows are near-copies (cosine similarity about
    0.97) of other rows of their chunk, so near-duplicate groups exist. ``first``: the number
    of rows inserted before (distinct image hashes). ``pairs``: a list that receives (image id,
    image id of the row it copies, cosine similarity) of each near-copy. ``finish``: False
    leaves the written vectors queued in neighbour_pending and skips ANALYZE and the index."""
    from visearch.db.models import register_model
    from visearch.db.vectors import ensure_hnsw_index, write_vectors

    rng = np.random.default_rng(seed + first)
    centres = np.random.default_rng(seed).normal(size=(clusters, dim)).astype(np.float32)
    with db.transaction() as conn:
        model = register_model(conn, "synthetic-1280", dim, False)
        conn.execute("UPDATE embedding_models SET is_active = false WHERE id = %s", (model.id,))
        conn.execute("INSERT INTO datasets (name) VALUES (%s) ON CONFLICT DO NOTHING", (dataset,))
        ds = conn.execute("SELECT id FROM datasets WHERE name = %s", (dataset,)).fetchone()[0]
    step = 10_000
    for start in range(first, first + n, step):
        m = min(step, first + n - start)
        vec = centres[rng.integers(clusters, size=m)] + 0.6 * rng.normal(size=(m, dim)).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        copies = int(near_copies * m)
        if copies:
            rows = rng.choice(m, copies, replace=False)
            of = rng.choice(np.setdiff1d(np.arange(m), rows), copies)
            vec[rows] = vec[of] + (0.25 / np.sqrt(dim)) * rng.normal(size=(copies, dim)).astype(np.float32)
            vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        if keep is not None:
            keep.append(vec)
        with db.transaction() as conn:
            ids = [r[0] for r in conn.execute(
                "INSERT INTO images (dataset_id, sha256, width, height, format)"
                " SELECT %s, sha256(int8send(g)), 32, 32, 'PNG' FROM generate_series(%s::bigint, %s::bigint) g RETURNING id",
                (ds, start, start + m - 1)).fetchall()]
            write_vectors(conn, model_id=model.id, item_kind="image", item_ids=ids, vectors=vec)
            if finish:
                conn.execute("DELETE FROM neighbour_pending WHERE model_id = %s", (model.id,))
        if copies and pairs is not None:
            sims = np.einsum("ij,ij->i", vec[rows], vec[of])
            pairs.extend((ids[r], ids[o], float(x)) for r, o, x in zip(rows, of, sims))
    if not finish:
        return 0.0
    t0 = time.perf_counter()
    with db.connect(autocommit=True) as conn:
        conn.execute("ANALYZE image_embeddings")
        if index:
            conn.execute("SET maintenance_work_mem = '2GB'")
            ensure_hnsw_index(conn, "image", model.id)
    return time.perf_counter() - t0


def faiss_floor(x: np.ndarray, k: int = 50) -> tuple[float, float]:
    """(fit s, assign s) of FAISS k-means on an in-memory array with the sample's own settings:
    the floor that a sample read from PostgreSQL cannot beat."""
    import faiss

    from visearch.curation.sample import NITER, POINTS_PER_CENTROID

    t0 = time.perf_counter()
    km = faiss.Kmeans(x.shape[1], k, niter=NITER, seed=0, spherical=True, verbose=False,
                      max_points_per_centroid=POINTS_PER_CENTROID)
    km.train(x)
    fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    km.index.search(x, 1)
    return fit, time.perf_counter() - t0


def bench_sample(db, settings, sizes, repeat: int = 2):
    """Each size: the synthetic vectors written once, then each method ``repeat`` times (the
    best run shown: the first one also warms PostgreSQL's buffers), with the FAISS floor on
    the same vectors in memory measured right after it."""
    from visearch.curation.sample import sample_to_collection
    from visearch.search import SearchRequest

    rows = []
    loads = [os.getloadavg()[0]]
    for n in sizes:
        _truncate(db)
        kept: list = []
        synthetic(db, n, index=False, keep=kept)
        x = np.concatenate(kept)
        del kept
        req = SearchRequest(datasets=("synthetic",), model="synthetic-1280")
        for method in ("centroids", "random"):
            runs = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                result = sample_to_collection(db, "bench", req, 50, method=method, settings=settings).result
                total = time.perf_counter() - t0
                floor_fit, floor_assign = faiss_floor(x)
                runs.append((total, result, floor_fit + floor_assign))
            total, result, floor = min(runs, key=lambda r: r[0])
            sec = result.seconds
            other = total - sum(sec.get(p, 0.0) for p in ("fetch", "fit", "assign", "write"))
            rows.append((n, method, len(result.hits), result.fitted_on, f"{sec['fetch']:.2f}", f"{sec['fit']:.2f}",
                         f"{sec['assign']:.2f}", f"{sec['write']:.3f}", f"{other:.2f}", f"{total:.2f}",
                         f"{floor:.2f}", f"{total / floor:.1f}", "< 10" if n >= 100_000 else "< 2"))
        del x
        loads.append(os.getloadavg()[0])
    print(f"\n## Diverse sample, n = 50, 1280-d vectors in PostgreSQL (load average {min(loads):.1f} to "
          f"{max(loads):.1f}, {os.cpu_count()} cores; best of {repeat})\n")
    print("fetch: COPY (FORMAT BINARY) of the filtered items' vectors, decoded into one array; fit: k-means "
          "centres (FAISS, on at most 256 x k vectors); assign: every item to its nearest centre; write: the "
          "temporary collection; other: picks, file names, filters. FAISS floor: fit + assign of FAISS k-means "
          "on the same vectors already in memory.\n")
    print(tabulate(rows, headers=["items", "method", "picked", "fitted on", "fetch s", "fit s", "assign s",
                                  "write s", "other s", "total s", "FAISS floor s", "total / floor",
                                  "target s"], tablefmt="github"))


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


def _photos(source: str, per_class: int) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) of the originals: every coco photo in coco128 and coco-mini (208), or
    ``per_class`` CIFAR-10 test images of each class (32 x 32 pixels)."""
    if source == "coco":
        files = sorted((DATA / "coco128" / "train2017").iterdir()) + sorted((DATA / "coco-mini" / "train2017").iterdir())
        return [(f.stem, Image.open(f).convert("RGB")) for f in files]
    cifar = DATA / "cifar10-test"
    return [(f"{label}_{f.stem}", Image.open(f).convert("RGB"))
            for label in sorted(p.name for p in cifar.iterdir() if p.is_dir())
            for f in sorted((cifar / label).iterdir())[:per_class]]


def bench_duplicates(db, settings, source: str, per_class: int, thresholds=(0.95, 0.9, 0.85)):
    """Precision and recall of near-duplicate groups per transformation, on real photos."""
    from visearch.curation import find_duplicates
    from visearch.embed import embed_pending
    from visearch.embedding import load_model
    from visearch.ingest import ingest_folder

    transforms = ("jpeg60", "half", "crop90", "flip")
    _truncate(db)
    work = Path(tempfile.mkdtemp(prefix="bench-dups-"))
    origin = {}  # file stem -> (original stem, transform)
    photos = _photos(source, per_class)
    for stem, image in photos:
        (work / f"{stem}.png").write_bytes(_png(image))
        origin[stem] = (stem, "original")
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
    item_of = {stem: i for i, stem in stem_of.items()}
    rows, timings = [], []
    for threshold in thresholds:
        t0 = time.perf_counter()
        dup = find_duplicates(db, "dups", threshold=threshold, settings=settings)
        timings.append(f"{threshold}: {time.perf_counter() - t0:.2f} s, {len(dup.groups)} groups")
        group_of = {m.item_id: g for g, group in enumerate(dup.groups) for m in group.members}
        members: dict[int, set[int]] = {}
        for item, g in group_of.items():
            members.setdefault(g, set()).add(item)
        for how in transforms + ("original",):
            mates = same = with_original = copies = 0
            for item, stem in stem_of.items():
                root, kind = origin[stem]
                if kind != how:
                    continue
                copies += 1
                group = members.get(group_of.get(item, -1), {item}) - {item}
                mates += len(group)
                same += sum(origin[stem_of[j]][0] == root for j in group)
                with_original += how != "original" and item_of[root] in group
            rows.append((threshold, how, copies, f"{same / mates:.3f}" if mates else "-",
                         f"{with_original / copies:.3f}" if how != "original" else "-", mates - same))
    print(f"\n## Near-duplicates: {len(photos)} {source} photos + 4 copies each (efficientnet-lite0; "
          f"{report.total_embedded} embedded in {embed_s:.0f} s incl. edges; duplicates query: "
          f"{'; '.join(timings)})\n")
    print("Per item of each kind: precision = share of its group-mates that are the same photo (its original "
          "or another copy of it); recall = share of the copies grouped with their original; wrong mates = "
          "group-mates from other photos, summed.\n")
    print(tabulate(rows, headers=["threshold", "item", "items", "precision", "recall", "wrong mates"],
                   tablefmt="github"))


def bench_edges(db, settings, sizes, batch: int = 1000, near_copies: float = 0.05):
    """Keeping the neighbour edges as vectors arrive: ``sizes[i]`` synthetic vectors indexed,
    then a new batch of ``batch`` written (triggers queue it, the HNSW index takes it) and its
    neighbours looked up (refresh_neighbours); then the full duplicates query over the dataset."""
    from visearch.curation import find_duplicates
    from visearch.curation.duplicates import DEFAULT_THRESHOLD, refresh_neighbours

    cost = []
    for n in sizes:
        _truncate(db)
        loads = [os.getloadavg()[0]]
        pairs: list = []
        build = synthetic(db, n, near_copies=near_copies, pairs=pairs)
        with db.connect(autocommit=True) as conn:
            model_id = conn.execute("SELECT id FROM embedding_models WHERE name = 'synthetic-1280'").fetchone()[0]
            # the base set's edges: its known near-copy pairs (looking all n up would take
            # n x the per-item cost below), plus a timed lookup of `batch` of its items
            with conn.cursor().copy("COPY neighbour_edges (model_id, item_kind, item_a, item_b, similarity)"
                                    " FROM STDIN") as copy:
                for a, b, sim in pairs:
                    copy.write_row((model_id, "image", min(a, b), max(a, b), sim))
            conn.execute("INSERT INTO neighbour_pending SELECT %s, 'image', image_id FROM image_embeddings"
                         " WHERE model_id = %s ORDER BY image_id LIMIT %s", (model_id, model_id, batch))
            t0 = time.perf_counter()
            base = refresh_neighbours(conn, model_id, ("image",))
            scratch = (time.perf_counter() - t0) / base * n
        t0 = time.perf_counter()
        synthetic(db, batch, near_copies=near_copies, first=n, seed=1, finish=False)  # the index stays
        write = time.perf_counter() - t0
        with db.connect(autocommit=True) as conn:
            pending = conn.execute("SELECT count(*) FROM neighbour_pending").fetchone()[0]
            t0 = time.perf_counter()
            done = refresh_neighbours(conn, model_id, ("image",))
            secs = time.perf_counter() - t0
            edges = conn.execute("SELECT count(*) FROM neighbour_edges").fetchone()[0]
        t0 = time.perf_counter()
        dup = find_duplicates(db, "synthetic", threshold=DEFAULT_THRESHOLD, model="synthetic-1280", settings=settings)
        query = time.perf_counter() - t0
        loads.append(os.getloadavg()[0])
        cost.append((n, f"{build:.0f}", f"{scratch:.0f}", batch, pending, f"{write:.2f}", done, f"{secs:.2f}",
                     f"{1000 * secs / done:.1f}", edges, len(dup.groups), f"{query:.2f}",
                     f"{min(loads):.1f}-{max(loads):.1f}"))
    print(f"\n## Keeping neighbour edges: a new batch into an indexed dataset (synthetic 1280-d, {near_copies:.0%} "
          "near-copies, k = 10 neighbours per new item, pairs >= 0.8 kept)\n")
    print("write: the batch's COPY + upsert with the HNSW index and the queueing trigger; refresh: one HNSW "
          "lookup per queued vector (refresh_neighbour_edges); query: `find_duplicates` at the default "
          f"threshold ({DEFAULT_THRESHOLD}) over the whole dataset (edges -> connected components -> keepers).\n")
    print(tabulate(cost, headers=["items before", "HNSW build s", "all from scratch s (extrapolated)", "batch",
                                  "queued",
                                  "write s", "looked up", "refresh s", "ms / item", "edges kept", "groups",
                                  "duplicates query s", "load"], tablefmt="github"))


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
    p.add_argument("--parts", default="sample,duplicates,edges,suspects")
    p.add_argument("--sizes", default="10000,100000", help="synthetic vector counts")
    p.add_argument("--source", choices=["coco", "cifar"], default="coco",
                   help="originals for duplicates: the 208 coco photos, or CIFAR-10 (--per-class each)")
    p.add_argument("--per-class", type=int, default=50, help="CIFAR-10 images per class for duplicates")
    p.add_argument("--batch", type=int, default=1000, help="new vectors per batch for edges")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-curation-"))
    settings, db = _open(tmp)
    try:
        parts = args.parts.split(",")
        if "sample" in parts:
            bench_sample(db, settings, sizes)
        if "duplicates" in parts:
            bench_duplicates(db, settings, args.source, args.per_class)
        if "edges" in parts:
            bench_edges(db, settings, sizes, batch=args.batch)
        if "suspects" in parts:
            bench_suspects(db, settings)
    finally:
        db.close()
        from visearch.db.embedded import release_embedded_server

        release_embedded_server(tmp)


if __name__ == "__main__":
    main()
