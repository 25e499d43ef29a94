"""The 10,000 CIFAR-10 test images of ``../shared/data/cifar10-test`` as efficientnet-lite0
vectors, embedded once and cached on disk (tests and benches).

Embedding 10k images takes ~2 min on a 2-core CPU, so the vectors are kept in a cache folder
(pytest's ``cache_dir`` in tests) under a name keyed by the model and a hash of the file list
(names and sizes): new or changed data, or another model, embeds again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

MODEL = "efficientnet-lite0"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def cifar_vectors(root: Path, cache_dir: Path, *, model: str = MODEL,
                  batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors, labels)``: float32 ``(n, dim)`` unit vectors of every image under ``root``
    (``<class>/<file>``, sorted by path) and the ``(n,)`` class names, from the cache when it
    holds this model and file list."""
    files = _files(root)
    key = hashlib.sha256(model.encode() + b"".join(
        f"{p.relative_to(root)}:{p.stat().st_size}\n".encode() for p in files)).hexdigest()[:16]
    path = Path(cache_dir) / f"cifar-{model}-{key}.npz"
    labels = np.array([p.parent.name for p in files])
    if path.exists():
        return np.load(path)["vectors"], labels
    from PIL import Image

    from visearch.embedding import load_model

    net = load_model(model)
    chunks = []
    for start in range(0, len(files), batch):
        images = [Image.open(p).convert("RGB") for p in files[start:start + batch]]
        chunks.append(np.asarray(net.embed_images(images), dtype=np.float32))
    vectors = np.concatenate(chunks)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, vectors=vectors)
    tmp.replace(path)
    return vectors, labels


def exact_top10(vectors: np.ndarray, first_id: int = 1) -> np.ndarray:
    """``(n, 10)`` int64 ids of each of the ``(n, d)`` unit vectors' exact 10 nearest by cosine
    (itself included), the vectors stored as ids ``first_id .. first_id + n - 1`` in order;
    2,000 rows of similarities at a time."""
    truth = np.empty((len(vectors), 10), dtype=np.int64)
    for start in range(0, len(vectors), 2000):
        sims = vectors[start:start + 2000] @ vectors.T
        truth[start:start + 2000] = np.argsort(-sims, axis=1)[:, :10] + first_id
    return truth
