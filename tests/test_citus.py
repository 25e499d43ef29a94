"""visearch on a real Citus cluster (``visearch db distribute``): placement, per-shard HNSW,
search equal to a single node, queue triggers and NOTIFY.

Runs only when ``VISEARCH_TEST_CITUS_URL`` names a Citus coordinator (a database on it whose
workers are added; the tests create and drop their own database next to it, on every node).
"""

from __future__ import annotations

import os

import numpy as np
import psycopg
import pytest
from citus_cluster import create_database, drop_database
from synthetic_vectors import ONE_PERCENT, TENTH_PERCENT, clustered_unit_vectors, load_vectors
from visearch.config import Settings
from visearch.db.citus import distribute
from visearch.db.database import open_database
from visearch.db.vectors import ensure_hnsw_index
from visearch.search import SearchRequest, search
from visearch.search.histogram import score_histogram

CITUS_URL = os.environ.get("VISEARCH_TEST_CITUS_URL")
pytestmark = pytest.mark.skipif(
    not CITUS_URL, reason="Citus tests SKIPPED: set VISEARCH_TEST_CITUS_URL to a Citus 14 coordinator to run them")

N, DIM, SHARDS = 3000, 32, 2
MODEL = "synthetic-32"


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_unit_vectors(N, DIM, clusters=30, seed=1)


@pytest.fixture(scope="module")
def citus_url():
    """A fresh database on every node of the cluster, with the nodes registered in it."""
    url = create_database(CITUS_URL)
    yield url
    drop_database(CITUS_URL, url)


@pytest.fixture(scope="module")
def citus_db(citus_url, vectors):
    """visearch's schema, distributed, with the synthetic vectors and their HNSW index."""
    db = open_database(Settings(database_url=citus_url))
    placed = distribute(citus_url, shard_count=SHARDS)
    with db.connect() as conn:
        model_id = load_vectors(conn, vectors, model=MODEL)
        ensure_hnsw_index(conn, "image", model_id)
        conn.commit()
    db.placements = {p.table: p for p in placed}
    db.model_id = model_id
    yield db
    db.close()


def test_big_tables_are_co_located_on_the_image_id_and_small_ones_are_reference_tables(citus_db):
    p = citus_db.placements
    big = ["images", "image_content", "image_labels", "annotations", "captions", "image_embeddings"]
    assert {p[t].kind for t in big} == {"distributed"}
    assert p["images"].column == "id" and {p[t].column for t in big[1:]} == {"image_id"}
    assert len({p[t].colocation for t in big}) == 1 and {p[t].shards for t in big} == {SHARDS}
    assert {p[t].kind for t in ("datasets", "concepts", "embedding_models", "collections")} == {"reference"}
    assert p["embedding_queue"].kind == p["embedding_workers"].kind == "coordinator"


def test_the_ranking_runs_on_every_shard_with_its_hnsw_index(citus_db, vectors):
    with citus_db.connect() as conn:
        conn.execute("SET citus.explain_all_tasks = on")
        # 375 vectors a shard: a sequential scan is cheaper, so forbid it (in the shards' sessions
        # too) to see that each shard's statement can use that shard's HNSW index
        conn.execute("SET citus.propagate_set_commands = 'local'")
        conn.execute("SET LOCAL enable_seqscan = off")
        # values inlined (client-side binding): Citus's per-task EXPLAIN does not carry parameters
        plan = "\n".join(r[0] for r in psycopg.ClientCursor(conn).execute(
            "EXPLAIN SELECT e.image_id FROM image_embeddings e JOIN images i ON i.id = e.image_id"
            " WHERE e.model_id = %s ORDER BY e.embedding::vector(32) <=> %s::vector(32) LIMIT 10",
            (citus_db.model_id, str(vectors[0].tolist()))))
    assert f"Task Count: {SHARDS}" in plan
    assert plan.count(f"Index Scan using image_embeddings_hnsw_model_{citus_db.model_id}_") == SHARDS, plan


def _requests():
    yield SearchRequest(image_ids=[7], limit=10)
    yield SearchRequest(image_ids=[7], limit=10, concepts=[ONE_PERCENT])
    yield SearchRequest(image_ids=[123], limit=5, concepts=[TENTH_PERCENT])
    yield SearchRequest(image_ids=[42], limit=20, exclude_concepts=[ONE_PERCENT], min_score=0.5)
    yield SearchRequest(image_ids=[42], limit=10, max_score=0.9, datasets=["synthetic"])
    yield SearchRequest(query="#every_100th", limit=10)


def test_searches_equal_a_single_node_s_in_exact_mode_and_hnsw_recall_is_reported(citus_db, db, vectors):
    with db.connect() as conn:
        load_vectors(conn, vectors, model=MODEL)
    for req in _requests():
        req.model, req.exact = MODEL, True
        one, dist = search(db, req), search(citus_db, req)
        assert [h.image_id for h in dist.hits] == [h.image_id for h in one.hits], req
        assert [h.score for h in dist.hits] == pytest.approx([h.score for h in one.hits], abs=1e-6)
        assert dist.candidates == one.candidates and dist.note == one.note
        h1 = score_histogram(db, one, bins=10)
        h2 = score_histogram(citus_db, dist, bins=10)
        assert h2.counts == h1.counts and h2.edges == pytest.approx(h1.edges)

    hits = 0
    queries = range(1, N, N // 20)
    for image_id in queries:
        exact = {h.image_id for h in search(citus_db, SearchRequest(image_ids=[image_id], limit=10, model=MODEL, exact=True)).hits}
        approx = search(citus_db, SearchRequest(image_ids=[image_id], limit=10, model=MODEL, exact=False))
        assert not approx.exact
        hits += len(exact & {h.image_id for h in approx.hits})
    recall = hits / (10 * len(queries))
    print(f"\nCitus ({SHARDS} shards, {N} x {DIM}-d): HNSW recall@10 vs exact = {recall:.3f}")
    assert recall >= 0.9


def test_queue_triggers_and_notify_keep_working_on_the_distributed_schema(citus_db, citus_url):
    with psycopg.connect(citus_url, autocommit=True) as listener, citus_db.connect() as conn:
        listener.execute("LISTEN visearch_embedding_queue")
        # a new active model: its backlog is queued on the coordinator, which notifies
        conn.execute("INSERT INTO embedding_models (name, dim, embeds_text) VALUES ('second', 8, false)")
        conn.commit()
        assert any(True for _ in listener.notifies(timeout=5, stop_after=1))
        queued = conn.execute("SELECT count(*) FROM embedding_queue q JOIN embedding_models m ON m.id = q.model_id"
                              " WHERE m.name = 'second' AND item_kind = 'image'").fetchone()[0]
        assert queued == N
        # a new image: the trigger on its shard (on a worker) queues it in the coordinator's queue
        image_id = conn.execute(
            "INSERT INTO images (dataset_id, sha256, width, height, format) SELECT id, sha256('new'::bytea),"
            " 10, 10, 'PNG' FROM datasets WHERE name = 'synthetic' RETURNING id").fetchone()[0]
        conn.commit()
        rows = conn.execute("SELECT m.name FROM embedding_queue q JOIN embedding_models m ON m.id = q.model_id"
                            " WHERE item_kind = 'image' AND item_id = %s ORDER BY 1", (image_id,)).fetchall()
        assert rows == [("second",), (MODEL,)]  # once per active model
        # deleting it removes its queue row (row trigger on the shard)
        conn.execute("DELETE FROM images WHERE id = %s", (image_id,))
        conn.commit()
        assert conn.execute("SELECT count(*) FROM embedding_queue WHERE item_kind = 'image' AND item_id = %s",
                            (image_id,)).fetchone()[0] == 0
        # re-enabling a dataset notifies (reference-table trigger, coordinator's copy only)
        for _ in listener.notifies(timeout=0.2):
            pass
        conn.execute("UPDATE datasets SET search_enabled = false WHERE name = 'synthetic'")
        conn.commit()
        conn.execute("UPDATE datasets SET search_enabled = true WHERE name = 'synthetic'")
        conn.commit()
        assert any(True for _ in listener.notifies(timeout=5, stop_after=1))
        conn.execute("DELETE FROM embedding_models WHERE name = 'second'")
        conn.commit()
