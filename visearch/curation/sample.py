"""Diverse sampling (Supervisely's "Diverse Search"): a representative variety of the items that
pass a search's filters, without any query.

k-means with k = n clusters over the unit vectors of the filtered items (spherical k-means,
Lloyd's algorithm as implemented by FAISS, ``faiss.Kmeans``; Johnson, Douze & Jegou 2019),
seeded so the same request gives the same sample. FAISS fits the centres on a random subset of
at most ``max_points_per_centroid * n`` vectors (capped at :data:`MAX_FIT`), then every item is
assigned to its nearest centre. From each cluster one item is taken:

- ``centroids``: the member most similar to the cluster's centre (the typical example);
- ``random``: one member drawn at random (seeded), so unusual items get their chance too.

Results carry the cluster id and size and come ordered by cluster size (largest first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from visearch.config import Settings, get_settings
from visearch.curation.search_seam import filtered_candidates
from visearch.db.database import Database
from visearch.errors import InvalidRequestError, NotEmbeddedError
from visearch.resources import read_sql

Method = Literal["centroids", "random"]
METHODS = ("centroids", "random")
MAX_SAMPLE = 1000
#: vectors k-means is fitted on, at most (all items are assigned afterwards)
MAX_FIT = 100_000


@dataclass
class SampleHit:
    """One sampled item. ``score`` is its cosine similarity to its cluster's centre."""

    image_id: int
    annotation_id: int | None  # objects mode: the box
    cluster: int  # 0-based, in order of cluster size (0 = largest)
    cluster_size: int
    score: float
    dataset: str = ""
    file_name: str | None = None
    concept: str | None = None  # objects mode


@dataclass
class SampleResult:
    """Duck-compatible with :class:`visearch.search.SearchResult` where collections need it."""

    mode: str
    model: str
    method: str
    hits: list[SampleHit]
    candidates: int  # items that passed the filters (all of them were assigned)
    fitted_on: int  # vectors k-means was fitted on
    seconds: dict[str, float] = field(default_factory=dict)  # fetch, kmeans (+ assign, pick), kmeans_cpu
    query_source: str = "sample"
    exact: bool = True
    note: str | None = None
    coverage: None = None
    candidates_capped: bool = False


def kmeans_sample(
    vectors: np.ndarray, n: int, *, method: Method = "centroids", seed: int = 0, niter: int = 20,
    max_fit: int = MAX_FIT,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Pick ``n`` diverse rows of ``vectors`` with k-means (k = n).

    Args:
        vectors: (N, dim) float32, unit rows.
        n: clusters (and rows) wanted; more than N gives N.
        method: ``centroids`` (nearest the centre) or ``random`` (one random member).
        seed: seeds both the k-means initialisation/subsampling and the random pick.
        max_fit: at most this many vectors are used to fit the centres.

    Returns:
        (picked, cluster, sizes, similarity, fitted): ``picked`` (m,) row indices, in order of
        cluster size (largest first, ties by cluster centre order); ``cluster`` (m,) the 0-based
        rank of each pick's cluster in that order; ``sizes`` (m,) members per cluster;
        ``similarity`` (m,) cosine similarity of each pick to its (unit) centre; ``fitted``
        how many vectors the centres were fitted on. m <= n: empty clusters give nothing.
    """
    import faiss

    if method not in METHODS:
        raise InvalidRequestError(f"method is one of {', '.join(METHODS)}, not {method!r}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    total, dim = x.shape
    k = min(int(n), total)
    if k <= 0:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.int64), np.zeros(0, np.float32), 0)
    rng = np.random.default_rng(seed)
    fit = x if total <= max_fit else x[np.sort(rng.choice(total, max_fit, replace=False))]
    if k == total:
        centres = x.copy()
        assign = np.arange(total)
    else:
        km = faiss.Kmeans(dim, k, niter=niter, seed=seed, spherical=True, verbose=False)
        km.cp.max_points_per_centroid = 256  # FAISS subsamples to k * 256 for fitting
        km.train(fit)
        centres = km.centroids
        _, labels = km.index.search(x, 1)
        assign = labels[:, 0]
    fitted = min(len(fit), k * 256) if k < total else total
    sizes = np.bincount(assign, minlength=k)
    order = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    members_sorted = np.argsort(assign, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    picked, cluster, size, similarity = [], [], [], []
    for rank, c in enumerate(order):
        members = members_sorted[starts[c]:starts[c + 1]]
        centre = centres[c] / max(float(np.linalg.norm(centres[c])), 1e-12)
        member_sims = x[members] @ centre
        if method == "centroids":
            j = int(np.argmax(member_sims))
        else:
            j = int(rng.integers(len(members)))
        picked.append(int(members[j]))
        cluster.append(rank)
        size.append(int(sizes[c]))
        similarity.append(float(member_sims[j]))
    return (np.asarray(picked, np.int64), np.asarray(cluster, np.int64), np.asarray(size, np.int64),
            np.asarray(similarity, np.float32), fitted)


def fetch_candidate_vectors(conn, cands) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item ids (N,) int64, image ids (N,) int64, vectors (N, dim) float32) of the filtered
    items, by id.

    One ``COPY (...) TO STDOUT (FORMAT BINARY)``: every row has the same size (two bigints and a
    vector of the model's dim), so the stream is decoded by one numpy view instead of N Python
    objects (100k x 1280-d is 0.5 GB).
    """
    dim = cands.model.dim
    select = read_sql("curation/candidate_vectors.sql").format(
        candidates=cands.sql, dim=dim)
    sql = f"COPY ({select.strip()}) TO STDOUT (FORMAT BINARY)"
    chunks = []
    with conn.cursor() as cur:
        with cur.copy(sql, params=cands.params) as copy:
            for chunk in copy:
                chunks.append(bytes(chunk))
    data = b"".join(chunks)
    # header: 11-byte signature, int32 flags, int32 extension length (+ extension); trailer int16 -1
    ext = int.from_bytes(data[15:19], "big")
    body = data[19 + ext: -2]
    row = np.dtype([("nfields", ">i2"), ("len_id", ">i4"), ("id", ">i8"), ("len_image", ">i4"),
                    ("image", ">i8"), ("len_vec", ">i4"), ("dims", ">i2"), ("unused", ">i2"),
                    ("vec", ">f4", (dim,))])
    if len(body) % row.itemsize:
        raise RuntimeError("unexpected COPY row size (a NULL or a vector of another dimension)")
    rows = np.frombuffer(body, dtype=row)
    order = np.argsort(rows["id"], kind="stable")  # by id: the same filters give the same sample
    return (rows["id"][order].astype(np.int64), rows["image"][order].astype(np.int64),
            np.ascontiguousarray(rows["vec"][order], dtype=np.float32))


def diverse_sample(
    db: Database, req, n: int = 50, *, method: Method = "centroids", seed: int = 0,
    settings: Settings | None = None,
) -> SampleResult:
    """A diverse sample of ``n`` items among those passing ``req``'s filters.

    Args:
        req: a :class:`~visearch.search.SearchRequest` used for its mode (images/objects), model
            and filters only (datasets, concepts, exclude_concepts, metadata, created range);
            any query source in it is ignored.
        n: items wanted (1..MAX_SAMPLE); fewer come back when fewer items pass the filters.
        method: ``centroids`` or ``random``.
        seed: the same seed, filters and vectors give the same sample.

    Raises:
        InvalidRequestError: bad ``n`` or ``method``; bad filters.
        NotFoundError: unknown dataset, concept or model.
        NotEmbeddedError: nothing passing the filters has a vector yet.
    """
    settings = settings or get_settings()
    if not 1 <= n <= MAX_SAMPLE:
        raise InvalidRequestError(f"n must be between 1 and {MAX_SAMPLE}, not {n}")
    if method not in METHODS:
        raise InvalidRequestError(f"method is one of {', '.join(METHODS)}, not {method!r}")
    seconds = {}
    t0 = time.perf_counter()
    with db.pooled() as conn:
        cands = filtered_candidates(conn, req, settings)
        ids, image_ids, vectors = fetch_candidate_vectors(conn, cands)
        conn.rollback()
    seconds["fetch"] = time.perf_counter() - t0
    if len(ids) == 0:
        raise NotEmbeddedError("no embedded items pass the filters: nothing to sample from")
    t0, cpu0 = time.perf_counter(), time.process_time()
    picked, cluster, sizes, sims, fitted = kmeans_sample(vectors, n, method=method, seed=seed)
    seconds["kmeans"] = time.perf_counter() - t0
    seconds["kmeans_cpu"] = time.process_time() - cpu0  # all threads of this process
    objects = cands.kind == "object"
    hits = [
        SampleHit(image_id=int(image_ids[p]), annotation_id=int(ids[p]) if objects else None,
                  cluster=int(c), cluster_size=int(s), score=float(sim))
        for p, c, s, sim in zip(picked, cluster, sizes, sims)
    ]
    _add_details(db, hits, objects)
    return SampleResult(
        mode=req.mode, model=cands.model.name, method=method, hits=hits, candidates=len(ids),
        fitted_on=fitted, seconds=seconds,
        note=f"the filters match {len(ids)} items" if len(ids) < n else None,
    )


def _add_details(db: Database, hits: list[SampleHit], objects: bool) -> None:
    if not hits:
        return
    with db.pooled() as conn:
        if objects:
            rows = conn.execute(read_sql("curation/object_details.sql"),
                                {"ids": [h.annotation_id for h in hits]}).fetchall()
            by_id = {r[0]: r for r in rows}
            for h in hits:
                _, _, h.dataset, h.file_name, h.concept, *_ = by_id[h.annotation_id]
        else:
            rows = conn.execute(read_sql("curation/image_details.sql"),
                                {"ids": [h.image_id for h in hits]}).fetchall()
            by_id = {r[0]: r for r in rows}
            for h in hits:
                _, h.dataset, h.file_name, *_ = by_id[h.image_id]
        conn.rollback()
