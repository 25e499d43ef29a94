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

    queries = range(1, N, N // 20)
    for concepts in ([], [ONE_PERCENT]):  # HNSW forced, unfiltered and with a #concept filter
        hits = wanted = 0
        for image_id in queries:
            exact = {h.image_id for h in search(citus_db, SearchRequest(
                image_ids=[image_id], limit=10, model=MODEL, concepts=concepts, exact=True)).hits}
            approx = search(citus_db, SearchRequest(image_ids=[image_id], limit=10, model=MODEL, concepts=concepts,
                                                    exact=False))
            hits += len(exact & {h.image_id for h in approx.hits})
            wanted += len(exact)
        recall = hits / wanted
        print(f"\nCitus ({SHARDS} shards, {N} x {DIM}-d, filter {concepts or 'none'}): HNSW recall@10 vs exact = {recall:.3f}")
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


# ---- real images on Citus: ingest, queue priority, object search, curation -------------------

COCO_IMAGES = 16  # images (and their boxes) embedded: enough boxes (~120) for neighbours


@pytest.fixture(scope="module")
def citus_coco(coco128):
    """coco128 ingested by ``visearch ingest``'s library call into a distributed schema whose
    model was active before the ingest, then images 1..16 and their boxes embedded there (the
    embed run also refreshes the neighbour edges). Yields (db, queued priorities, ingest reports)."""
    from visearch.db.models import register_model
    from visearch.embed import embed_pending
    from visearch.embedding import load_model
    from visearch.ingest import ingest_coco

    url = create_database(CITUS_URL)
    db = open_database(Settings(database_url=url))
    try:
        distribute(url, shard_count=SHARDS)
        model = load_model("efficientnet-lite0")
        with db.transaction() as conn:
            register_model(conn, model.name, model.dim, model.embeds_text)
        reports = [ingest_coco(db, "coco128", coco128 / "train2017", coco128 / "annotations" / "instances_train2017.json",
                               progress=False) for _ in range(2)]
        with db.transaction() as conn:
            priorities = conn.execute("SELECT item_kind, priority, count(*) FROM embedding_queue"
                                      " GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
            conn.execute("DELETE FROM embedding_queue WHERE NOT ((item_kind = 'image' AND item_id <= %s) OR"
                         " (item_kind = 'object' AND item_id IN (SELECT id FROM annotations WHERE image_id <= %s)))",
                         (COCO_IMAGES, COCO_IMAGES))
        embed_pending(db, model, progress=False)
        db.model = model
        yield db, priorities, reports
    finally:
        db.close()
        drop_database(CITUS_URL, url)


def _by_external_id(conn, kind: str) -> dict[int, str]:
    """id -> a name that is the same on both databases (image sha256, COCO annotation id)."""
    if kind == "image":
        return {i: s.hex() for i, s in conn.execute("SELECT id, sha256 FROM images")}
    return {i: e for i, e in conn.execute("SELECT id, external_id FROM annotations")}


@pytest.fixture(scope="module")
def single_coco(database, coco128, citus_coco):
    """The same coco128 on one node, with the Citus database's vectors copied over by content
    (image sha256, COCO annotation id): the same vectors on both sides, whatever ids each gave."""
    from conftest import truncate_all
    from pgvector.psycopg import register_vector
    from visearch.db.models import register_model
    from visearch.ingest import ingest_coco

    cdb, _, _ = citus_coco
    truncate_all(database)
    ingest_coco(database, "coco128", coco128 / "train2017", coco128 / "annotations" / "instances_train2017.json",
                progress=False)
    with cdb.connect() as conn:
        register_vector(conn)
        images = conn.execute("SELECT i.sha256, e.embedding FROM image_embeddings e JOIN images i ON i.id = e.image_id").fetchall()
        boxes = conn.execute("SELECT a.external_id, e.embedding FROM object_embeddings e"
                             " JOIN annotations a ON a.id = e.annotation_id AND a.image_id = e.image_id").fetchall()
    model = cdb.model
    with database.transaction() as conn:
        register_vector(conn)
        model_id = register_model(conn, model.name, model.dim, model.embeds_text).id
        conn.execute("DELETE FROM embedding_queue")
        for sha, vec in images:
            conn.execute("INSERT INTO image_embeddings (model_id, image_id, embedding)"
                         " SELECT %s, id, %s FROM images WHERE sha256 = %s", (model_id, vec, sha))
        for ext, vec in boxes:  # without image_id: 0014's trigger fills it in
            conn.execute("INSERT INTO object_embeddings (model_id, annotation_id, embedding)"
                         " SELECT %s, id, %s FROM annotations WHERE external_id = %s", (model_id, vec, ext))
    with database.connect() as conn:
        for kind in ("image", "object"):
            ensure_hnsw_index(conn, kind, model_id)
        conn.commit()
        from visearch.curation.duplicates import refresh_neighbours
        refresh_neighbours(conn, model_id)
    return database


def test_ingest_runs_on_citus_once_per_content_and_queues_its_items_as_bulk(citus_coco):
    db, priorities, (first, again) = citus_coco
    assert (first.images_added, first.annotations_added) == (128, 939)
    assert (again.images_added, again.images_existing, again.annotations_added) == (0, 128, 0)
    # SET LOCAL visearch.queue_priority = 'bulk' reached the shards' triggers: all bulk (1)
    assert priorities == [("image", 1, 128), ("object", 1, 939)]
    with db.connect() as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT sha256) FROM images").fetchone() == (128, 128)


def test_object_vectors_are_co_located_with_their_images_and_carry_the_box_s_image_id(citus_coco):
    db, _, _ = citus_coco
    with db.connect() as conn:
        placed = {p.table: p for p in __import__("visearch.db.citus", fromlist=["placements"]).placements(conn)}
        assert placed["object_embeddings"].column == "image_id"
        assert placed["object_embeddings"].colocation == placed["images"].colocation
        n, wrong = conn.execute("SELECT count(*), count(*) FILTER (WHERE a.image_id IS DISTINCT FROM e.image_id)"
                                " FROM object_embeddings e LEFT JOIN annotations a ON a.id = e.annotation_id"
                                " AND a.image_id = e.image_id").fetchone()
        assert n > 50 and wrong == 0


def _object_requests(conn):
    boxes = [r[0] for r in conn.execute("SELECT e.annotation_id FROM object_embeddings e ORDER BY 1 LIMIT 40")]
    yield SearchRequest(mode="objects", annotation_id=boxes[0], limit=10)
    yield SearchRequest(mode="objects", annotation_id=boxes[7], limit=10, concepts=["person"])
    yield SearchRequest(mode="objects", annotation_id=boxes[21], limit=5, exclude_concepts=["person"], min_score=0.2)
    yield SearchRequest(mode="objects", annotation_id=boxes[33], limit=10, datasets=["coco128"], max_score=0.9,
                        exclude_query_items=True)
    yield SearchRequest(mode="objects", query="#person", limit=10)


def test_object_search_on_citus_equals_a_single_node_s_in_exact_mode(citus_coco, single_coco):
    cdb, _, _ = citus_coco
    with cdb.connect() as cconn, single_coco.connect() as sconn:
        c_names, s_names = _by_external_id(cconn, "object"), _by_external_id(sconn, "object")
        s_ids = {v: k for k, v in s_names.items()}
        requests = list(_object_requests(cconn))
    for req in requests:
        req.exact = True
        dist = search(cdb, req)
        if req.annotation_id is not None:  # the same box by its COCO id on the single node
            req.annotation_id = s_ids[c_names[req.annotation_id]]
        one = search(single_coco, req)
        assert len(one.hits) > 0
        assert [c_names[h.annotation_id] for h in dist.hits] == [s_names[h.annotation_id] for h in one.hits], req
        assert [h.score for h in dist.hits] == pytest.approx([h.score for h in one.hits], abs=1e-5)
        assert [c for h in dist.hits for c in h.bbox_xywh] == pytest.approx([c for h in one.hits for c in h.bbox_xywh])
        h1, h2 = score_histogram(single_coco, one, bins=10), score_histogram(cdb, dist, bins=10)
        assert h2.counts == h1.counts


def _mapped_pairs(rows, names):
    return sorted((min(names[a], names[b]), max(names[a], names[b]), round(s, 5)) for a, b, s in rows)


def test_curation_functions_run_on_citus_and_agree_with_a_single_node(citus_coco, single_coco):
    """near_duplicate_pairs, label_error_suspects and the worker's neighbour refresh look up
    neighbours per item on Citus (sql/citus/curation.sql); same answers as one node."""
    cdb, _, _ = citus_coco
    name = cdb.model.name
    out = {}
    for side, db in (("citus", cdb), ("single", single_coco)):
        with db.connect() as conn:
            names = _by_external_id(conn, "object")
            images = _by_external_id(conn, "image")
            out[side] = {
                "pairs": _mapped_pairs(conn.execute("SELECT * FROM near_duplicate_pairs(%s, 'object', NULL, 5, 0.8)",
                                                    (name,)).fetchall(), names),
                "suspects": sorted((names[r[0]], r[2], r[3], round(r[4], 5)) for r in conn.execute(
                    "SELECT item_id, image_id, concept, looks_like, share FROM label_error_suspects(%s, 'object', NULL, 5, 0.5)",
                    (name,))),
                "edges": _mapped_pairs(conn.execute("SELECT item_a, item_b, similarity FROM neighbour_edges"
                                                    " WHERE item_kind = 'object'").fetchall(), names),
                "image_edges": _mapped_pairs(conn.execute("SELECT item_a, item_b, similarity FROM neighbour_edges"
                                                          " WHERE item_kind = 'image'").fetchall(), images),
                "pending": conn.execute("SELECT count(*) FROM neighbour_pending").fetchone()[0],
            }
    assert out["citus"]["pairs"] and out["citus"]["suspects"] and out["citus"]["edges"]
    assert out["citus"] == out["single"]
