"""Diverse sampling (Supervisely's "Diverse Search"): a representative variety of the items that
pass a search's filters, without any query.

k-means with k = n clusters over the unit vectors of the filtered items (spherical k-means,
Lloyd's algorithm as implemented by FAISS, ``faiss.Kmeans``; Johnson, Douze & Jegou 2019),
seeded so the same request gives the same sample. The centres are fitted on a seeded random
subset of at most ``POINTS_PER_CENTROID * n`` vectors (capped at :data:`MAX_FIT`), then every
item is assigned to its nearest centre. The vectors come from PostgreSQL as one binary ``COPY``
(:func:`fetch_candidate_vectors`). From each cluster one item is taken:

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
#: FAISS's default cap on fitting vectors per centre (k-means is fitted on at most k * this)
POINTS_PER_CENTROID = 256
#: Lloyd iterations
NITER = 20


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
    seconds: dict[str, float] = field(default_factory=dict)  # fetch, fit, assign, pick (+ write when kept)
    query_source: str = "sample"
    exact: bool = True
    note: str | None = None
    coverage: None = None
    candidates_capped: bool = False


def kmeans_sample(
    vectors: np.ndarray, n: int, *, method: Method = "centroids", seed: int = 0, niter: int = NITER,
    max_fit: int = MAX_FIT, seconds: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Pick ``n`` diverse rows of ``vectors`` with k-means (k = n).

    Args:
        vectors: (N, dim) float32, unit rows, rows in a stable order (the caller's ids ascending):
            the same rows in the same order give the same picks.
        n: clusters (and rows) wanted; more than N gives N.
        method: ``centroids`` (nearest the centre) or ``random`` (one random member).
        seed: seeds both the k-means initialisation/subsampling and the random pick.
        niter: Lloyd iterations.
        max_fit: at most this many vectors are used to fit the centres (FAISS itself then uses
            at most 256 per centre).
        seconds: if given, filled with wall seconds of ``fit`` (training the centres), ``assign``
            (every row to its nearest centre) and ``pick``.

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
    seconds = {} if seconds is None else seconds
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    total, dim = x.shape
    k = min(int(n), total)
    if k <= 0:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.int64), np.zeros(0, np.float32), 0)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if k == total:
        centres = x.copy()
        fitted = total
    else:
        # the fitting subset is drawn here (seeded, ids ascending), not by FAISS: k * 256 rows
        fitted = min(total, max_fit, k * POINTS_PER_CENTROID)
        fit = x if fitted == total else x[np.sort(rng.choice(total, fitted, replace=False))]
        km = faiss.Kmeans(dim, k, niter=niter, seed=seed, spherical=True, verbose=False,
                          max_points_per_centroid=POINTS_PER_CENTROID)
        km.train(fit)
        centres = km.centroids
    centres = centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    seconds["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # nearest unit centre by inner product (= by L2 for unit centres); the score is the
    # cosine similarity itself, so no second pass over the vectors is needed
    index = faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(centres, dtype=np.float32))
    sims, labels = index.search(x, 1)
    assign, sims = labels[:, 0], sims[:, 0]
    seconds["assign"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sizes = np.bincount(assign, minlength=k)
    order = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    members_sorted = np.argsort(assign, kind="stable")  # each cluster's rows, ascending
    starts = np.concatenate([[0], np.cumsum(sizes)])
    picked, cluster, size, similarity = [], [], [], []
    for rank, c in enumerate(order):
        members = members_sorted[starts[c]:starts[c + 1]]
        if method == "centroids":
            j = int(np.argmax(sims[members]))  # the first (lowest row) on ties
        else:
            j = int(rng.integers(len(members)))
        picked.append(int(members[j]))
        cluster.append(rank)
        size.append(int(sizes[c]))
        similarity.append(float(sims[members[j]]))
    seconds["pick"] = time.perf_counter() - t0
    return (np.asarray(picked, np.int64), np.asarray(cluster, np.int64), np.asarray(size, np.int64),
            np.asarray(similarity, np.float32), fitted)


def _copy_row_dtype(dim: int) -> np.dtype:
    # one row of COPY ... (FORMAT BINARY) of (bigint, bigint, vector(dim)): a field count, then
    # each field's byte length and value; pgvector's binary vector is int16 dim, int16 unused,
    # dim float4, all big-endian
    return np.dtype([("nfields", ">i2"), ("len_id", ">i4"), ("id", ">i8"), ("len_image", ">i4"),
                     ("image", ">i8"), ("len_vec", ">i4"), ("dims", ">i2"), ("unused", ">i2"),
                     ("vec", ">f4", (dim,))])


def decode_copy_vectors(data: bytearray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode a ``COPY (SELECT bigint, bigint, vector(dim)) TO STDOUT (FORMAT BINARY)`` stream.

    Args:
        data: the whole stream (header, rows, trailer); its vector bytes are byte-swapped in
            place (it is scratch space afterwards).
        dim: the vectors' dimension.

    Returns:
        (ids (N,) int64, image ids (N,) int64, vectors (N, dim) float32 C-contiguous), rows by
        id ascending.

    Raises:
        RuntimeError: rows of another shape (a NULL, a vector of another dimension).
    """
    row = _copy_row_dtype(dim)
    # header: 11-byte signature, int32 flags, int32 extension length (+ extension); trailer int16 -1
    ext = int.from_bytes(data[15:19], "big")
    start, stop = 19 + ext, len(data) - 2
    if (stop - start) % row.itemsize:
        raise RuntimeError("unexpected COPY row size (a NULL or a vector of another dimension)")
    count = (stop - start) // row.itemsize
    rows = np.frombuffer(data, dtype=row, count=count, offset=start)
    if count and not ((rows["nfields"] == 3).all() and (rows["dims"] == dim).all()):
        raise RuntimeError("unexpected COPY row (a NULL or a vector of another dimension)")
    ids = rows["id"].astype(np.int64)
    image_ids = rows["image"].astype(np.int64)
    # the vector bytes as one contiguous (N, 4*dim) copy, then swapped in place: one pass over
    # the 0.5 GB of 100k x 1280-d, where numpy's big-endian cast of the strided field takes three
    raw = np.frombuffer(data, dtype=np.uint8, count=count * row.itemsize, offset=start)
    raw = raw.reshape(count, row.itemsize)[:, row.fields["vec"][1]:]
    if count and np.all(ids[1:] > ids[:-1]):
        vectors = np.ascontiguousarray(raw).view(">f4")
    else:  # by id: the same filters give the same sample, whatever order the server sent
        order = np.argsort(ids, kind="stable")
        ids, image_ids = ids[order], image_ids[order]
        vectors = raw[order].view(">f4")
    vectors.byteswap(inplace=True)
    return ids, image_ids, vectors.view(np.float32).reshape(count, dim)


def fetch_candidate_vectors(conn, cands) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item ids (N,) int64, image ids (N,) int64, vectors (N, dim) float32) of the filtered
    items, by id.

    One ``COPY (...) TO STDOUT (FORMAT BINARY)`` (pgvector's binary form: 4 bytes a dimension,
    where text would be about 10): every row has the same size, so the stream is appended to one
    buffer and decoded by numpy views (:func:`decode_copy_vectors`), never N Python objects.
    """
    dim = cands.model.dim
    select = read_sql("curation/candidate_vectors.sql").format(candidates=cands.sql, dim=dim)
    sql = f"COPY ({select.strip()}) TO STDOUT (FORMAT BINARY)"
    data = bytearray()
    with conn.cursor() as cur:
        with cur.copy(sql, params=cands.params) as copy:
            for chunk in copy:
                data += chunk
    return decode_copy_vectors(data, dim)


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
    picked, cluster, sizes, sims, fitted = kmeans_sample(vectors, n, method=method, seed=seed, seconds=seconds)
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


@dataclass
class KeptSample:
    result: SampleResult
    collection: object  # visearch.collections.service.Collection
    page: list  # its items (CollectionItem), in sample order


def sample_to_collection(
    db: Database, owner: str, req, n: int = 50, *, method: Method = "centroids", seed: int = 0,
    query: dict | None = None, settings: Settings | None = None,
) -> KeptSample:
    """:func:`diverse_sample`, kept as ``owner``'s temporary collection (replacing their last
    search), so it can be saved, tagged, copied and exported like any search. What ``POST
    /v1/sample`` and ``visearch sample`` both do.

    Args:
        owner: whose collection (the API key's name; ``anonymous`` without keys).
        query: the request as JSON, stored with the collection (the clusters are added).

    Raises:
        As :func:`diverse_sample`.
    """
    from visearch.collections.service import record_search

    result = diverse_sample(db, req, n, method=method, seed=seed, settings=settings)
    stored = dict(query or {})
    stored["clusters"] = [[h.cluster, h.cluster_size] for h in result.hits]
    t0 = time.perf_counter()
    collection, page = record_search(db, owner, result, query=stored, page_limit=max(1, len(result.hits)))
    result.seconds["write"] = time.perf_counter() - t0
    return KeptSample(result=result, collection=collection, page=page)


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
