"""Embedding pipeline throughput against the bare model, side by side in one run.

    pipeline : visearch's embed job on queued items: read bytes from PostgreSQL, decode and crop
               in DataLoader workers while the model runs, write vectors with COPY, dequeue;
    forward  : the model's forward pass alone on the same items, already decoded and
               preprocessed in memory (the ceiling for the pipeline).

The ratio pipeline/forward says how much of the model's speed reaches the database (1.0 = the
model is the only cost). Data: CIFAR-10 test images (32x32 JPEGs, upscaled by the model's
preprocessing) and coco128 (640x480 photos: 128 images plus their 939 box crops).

    python bench/bench_embedding.py [--cifar-images 2000] [--batch-size 64] [--workers N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tabulate import tabulate

from visearch.config import Settings
from visearch.db.database import open_database
from visearch.db.models import register_model
from visearch.embed import _load_items, embed_pending
from visearch.embedding import load_model
from visearch.embedding.crops import crop_box
from visearch.embedding.decode import decode_image
from visearch.ingest import ingest_coco, ingest_folder

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def requeue(db, model_id: int, dataset: str) -> None:
    """Forget the dataset's vectors so the embed job has them all to do again."""
    with db.transaction() as conn:
        ds = conn.execute("SELECT id FROM datasets WHERE name = %s", (dataset,)).fetchone()[0]
        conn.execute(
            "DELETE FROM image_embeddings e USING images i WHERE e.image_id = i.id AND i.dataset_id = %s", (ds,))
        conn.execute(
            "DELETE FROM object_embeddings e USING annotations a, images i"
            " WHERE e.annotation_id = a.id AND a.image_id = i.id AND i.dataset_id = %s", (ds,))
        conn.execute("SELECT enqueue_model_backlog(%s)", (model_id,))


def pipeline_rate(db, model, dataset: str, batch_size: int, workers: int | None) -> tuple[int, float]:
    with db.connect() as conn:
        ds = conn.execute("SELECT id FROM datasets WHERE name = %s", (dataset,)).fetchone()[0]
    t0 = time.perf_counter()
    report = embed_pending(db, model, dataset_ids=[ds], batch_size=batch_size, num_workers=workers,
                           progress=False)
    return report.total_embedded, time.perf_counter() - t0


def forward_rate(db, model, dataset: str, batch_size: int) -> tuple[int, float]:
    """Decode and preprocess the same items up front (untimed); time only the forward passes."""
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT 'image', i.id FROM images i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = %s"
            " UNION ALL SELECT 'object', a.id FROM annotations a JOIN images i ON i.id = a.image_id"
            " JOIN datasets d ON d.id = i.dataset_id WHERE d.name = %s", (dataset, dataset)).fetchall()

        class _C:  # the fields _load_items reads from a claim
            def __init__(self, kind, item_id):
                self.item_kind, self.item_id = kind, item_id

        items, _ = _load_items(conn, [_C(k, i) for k, i in rows])
    tensors = []
    for item in items:
        image = decode_image(item.data)
        if item.bbox_xywh is not None:
            image = crop_box(image, item.bbox_xywh)
        tensors.append(model.preprocess(image))
    t0 = time.perf_counter()
    for start in range(0, len(tensors), batch_size):
        model.embed_batch(torch.stack(tensors[start:start + batch_size]))
    return len(tensors), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cifar-images", type=int, default=2000, help="how many CIFAR-10 test images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader decode processes")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each is kept")
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".visearch" / "bench-embedding")
    args = ap.parse_args()

    db = open_database(Settings(data_dir=args.data_dir))
    model = load_model(args.model)
    with db.transaction() as conn:
        model_row = register_model(conn, model.name, model.dim, model.embeds_text)

    cifar_dir = args.data_dir / f"cifar-{args.cifar_images}"
    if not cifar_dir.exists():  # a fixed subset: the first N files of each class, as symlinks
        per_class = args.cifar_images // 10
        for class_dir in sorted((DATA / "cifar10-test").iterdir()):
            (cifar_dir / class_dir.name).mkdir(parents=True)
            for f in sorted(class_dir.iterdir())[:per_class]:
                (cifar_dir / class_dir.name / f.name).symlink_to(f)
    ingest_folder(db, "bench-cifar", cifar_dir, labels_from_folders=True, progress=False)
    ingest_coco(db, "bench-coco128", DATA / "coco128" / "train2017",
                DATA / "coco128" / "annotations" / "instances_train2017.json", progress=False)

    table = []
    for dataset, label in (("bench-cifar", "CIFAR-10 test (32x32)"), ("bench-coco128", "coco128 images + boxes")):
        pipe = fwd = 0.0
        for _ in range(args.repeats):  # interleaved, so that load from elsewhere hits both alike
            requeue(db, model_row.id, dataset)
            n_pipe, t_pipe = pipeline_rate(db, model, dataset, args.batch_size, args.workers)
            n_fwd, t_fwd = forward_rate(db, model, dataset, args.batch_size)
            pipe, fwd = max(pipe, n_pipe / t_pipe), max(fwd, n_fwd / t_fwd)
        table.append([label, n_pipe, f"{pipe:.1f}", f"{fwd:.1f}", f"{pipe / fwd:.2f}"])
    print(f"\n{model.name}, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"decode workers {args.workers if args.workers is not None else 'default'}")
    print(tabulate(table, headers=["data", "items", "pipeline items/s", "forward-only items/s", "ratio"]))


if __name__ == "__main__":
    main()
