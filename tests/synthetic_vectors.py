"""Synthetic clustered unit vectors, bulk-loaded as images with embeddings (tests and benches).

Rows go in with binary COPY (pgvector-python ``examples/loading``). Every image gets the concept
``every_100th`` when ``id % 100 == 0`` and ``every_1000th`` when ``id % 1000 == 0``: searches
filtered by them select 1% and 0.1% of the vectors.
"""

from __future__ import annotations

import hashlib

import numpy as np
import psycopg

ONE_PERCENT, TENTH_PERCENT = "every_100th", "every_1000th"


def clustered_unit_vectors(n: int, dim: int, *, clusters: int = 100, spread: float = 0.35,
                           seed: int = 0) -> np.ndarray:
    """``(n, dim)`` float32 unit vectors around ``clusters`` random unit centres (Gaussian noise
    of ``spread`` per unit norm): neighbours are meaningful, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def load_vectors(conn: psycopg.Connection, vectors: np.ndarray, *, model: str, dataset: str = "synthetic",
                 first_id: int = 1, batch: int = 20_000, activate: bool = True) -> int:
    """Insert ``len(vectors)`` images (ids ``first_id``...) in ``dataset`` with their vectors for
    ``model`` (registered inactive while loading: nothing is queued; then activated unless
    ``activate`` is False, which finds nothing left to queue), the 1% / 0.1% concept labels,
    analyze the tables, and return the model id. Commits."""
    from pgvector.psycopg import register_vector

    register_vector(conn)
    n, dim = vectors.shape
    model_id = conn.execute(
        "INSERT INTO embedding_models (name, dim, embeds_text, is_active) VALUES (%s, %s, false, false)"
        " ON CONFLICT (name) DO UPDATE SET dim = EXCLUDED.dim RETURNING id", (model, dim)).fetchone()[0]
    dataset_id = conn.execute(
        "INSERT INTO datasets (name) VALUES (%s) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
        " RETURNING id", (dataset,)).fetchone()[0]
    concepts = dict(conn.execute(
        "INSERT INTO concepts (name) VALUES (%s), (%s) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
        " RETURNING name, id", (ONE_PERCENT, TENTH_PERCENT)).fetchall())
    conn.commit()
    for start in range(0, n, batch):
        ids = range(first_id + start, first_id + min(n, start + batch))
        with conn.cursor() as cur:
            with cur.copy("COPY images (id, dataset_id, sha256, width, height, format, external_id)"
                          " FROM STDIN") as copy:
                for i in ids:
                    copy.write_row((i, dataset_id, hashlib.sha256(b"%d" % i).digest(), 64, 64, "JPEG", str(i)))
            with cur.copy("COPY image_labels (image_id, concept_id, source) FROM STDIN") as copy:
                for i in ids:
                    if i % 100 == 0:
                        copy.write_row((i, concepts[ONE_PERCENT], "synthetic"))
                    if i % 1000 == 0:
                        copy.write_row((i, concepts[TENTH_PERCENT], "synthetic"))
            with cur.copy("COPY image_embeddings (model_id, image_id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "int8", "vector"])
                for i in ids:
                    copy.write_row((model_id, i, vectors[i - first_id]))
        conn.commit()
    # the ids were given explicitly: move the identity past them for later inserts
    conn.execute("SELECT setval(pg_get_serial_sequence('images', 'id'), %s)", (first_id + n,))
    conn.commit()
    conn.execute("ANALYZE images, image_labels, image_embeddings")  # planner statistics after a bulk load
    conn.commit()
    if activate:
        conn.execute("UPDATE embedding_models SET is_active = true WHERE id = %s", (model_id,))
    conn.commit()
    return model_id
