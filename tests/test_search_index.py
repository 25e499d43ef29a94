"""How searches use the HNSW index, on 5,000 vectors: enough rows that PostgreSQL's planner
prefers the index (on coco128's 128 images an exact scan is cheaper, and it picks that)."""

from __future__ import annotations


import numpy as np
import pytest

from visearch.db.models import register_model
from visearch.db.vectors import ensure_hnsw_index, write_vectors
from visearch.search import SearchRequest, search
from visearch.search.service import rank_sql

N_BIG, N_SMALL, DIM = 4950, 50, 64


@pytest.fixture
def vectors_db(db):
    """Two datasets of random unit vectors: 'big' (4,950 images) and 'small' (50, i.e. 1%)."""
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((N_BIG + N_SMALL, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with db.transaction() as conn:
        model = register_model(conn, "synthetic-64", DIM, False, active=False)
        ids = []
        for name, n in (("big", N_BIG), ("small", N_SMALL)):
            dataset = conn.execute("INSERT INTO datasets (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]
            ids += [r[0] for r in conn.execute(
                "INSERT INTO images (dataset_id, sha256, width, height, format)"
                " SELECT %s, sha256((%s || g)::bytea), 32, 32, 'JPEG' FROM generate_series(1, %s) g"
                " RETURNING id", (dataset, name, n)).fetchall()]
        write_vectors(conn, model_id=model.id, item_kind="image", item_ids=ids, vectors=vecs)
        ensure_hnsw_index(conn, "image", model.id)
        conn.execute("ANALYZE image_embeddings")
    return db, ids, vecs


def _params(query, **kw):
    base = {"model_id": 1, "dataset_ids": None, "concept_ids": [], "exclude_concept_ids": [],
            "metadata": None, "created_from": None, "created_to": None, "query": query,
            "limit": 10, "min_distance": None}
    return base | kw


def test_unfiltered_search_is_served_by_the_hnsw_index(vectors_db, settings):
    db, ids, vecs = vectors_db
    with db.connect() as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + rank_sql("image", DIM, exact=False), _params(vecs[0])))
        exact_plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + rank_sql("image", DIM, exact=True), _params(vecs[0])))
    assert "Index Scan using image_embeddings_hnsw_model_1" in plan
    assert "hnsw" not in exact_plan


def test_hnsw_recall_at_10_against_exact_search(vectors_db, settings):
    db, ids, _ = vectors_db
    recalls = []
    for query_id in ids[:200:10]:
        req = dict(model="synthetic-64", image_ids=[query_id], limit=10)
        approx = search(db, SearchRequest(**req, exact=False), settings)
        exact = search(db, SearchRequest(**req, exact=True), settings)
        assert not approx.exact and exact.exact
        recalls.append(len({h.image_id for h in approx.hits} & {h.image_id for h in exact.hits}) / 10)
    assert np.mean(recalls) >= 0.9


def test_a_one_percent_filter_still_returns_k_rows(vectors_db, settings):
    db, ids, _ = vectors_db
    small = set(ids[N_BIG:])
    for exact in (None, False):  # chosen by visearch (exact), or forced through the index
        result = search(db, SearchRequest(model="synthetic-64", image_ids=[ids[0]], datasets=["small"],
                                          limit=10, exact=exact), settings)
        assert len(result.hits) == 10
        assert {h.image_id for h in result.hits} <= small
        assert result.candidates == N_SMALL
    truth = search(db, SearchRequest(model="synthetic-64", image_ids=[ids[0]], datasets=["small"],
                                     limit=10, exact=True), settings)
    assert [h.image_id for h in result.hits] == [h.image_id for h in truth.hits]


def test_selective_filter_is_answered_exactly_and_broad_one_by_the_index(vectors_db, settings):
    db, ids, _ = vectors_db
    narrow = search(db, SearchRequest(model="synthetic-64", image_ids=[ids[0]], datasets=["small"]), settings)
    broad = search(db, SearchRequest(model="synthetic-64", image_ids=[ids[0]]), settings)
    assert narrow.exact and not broad.exact


def test_candidate_count_stops_at_the_cap(vectors_db, settings):
    db, ids, _ = vectors_db
    capped = settings.model_copy(update={"count_candidates_max": 100})
    result = search(db, SearchRequest(model="synthetic-64", image_ids=[ids[0]]), capped)
    assert result.candidates == 100 and result.candidates_capped and len(result.hits) == 20
    small = search(db, SearchRequest(model="synthetic-64", image_ids=[ids[0]], datasets=["small"]), capped)
    assert small.candidates == N_SMALL and not small.candidates_capped
