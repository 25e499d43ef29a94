"""HNSW index builds without outages: CREATE INDEX CONCURRENTLY from Python, the bulk-load drop
only on an explicit ``visearch embed --bulk``, and an index left dropped by a killed bulk load
rebuilt by the next embedder (a worker with an empty queue too) and reported by ``visearch status``."""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest

from visearch.db.models import register_model
from visearch.db.vectors import build_hnsw_index, drop_hnsw_index, hnsw_index_name, hnsw_index_state, write_vectors
from visearch.embed import embed_pending
from visearch.status import collect_status, format_status
from visearch.worker.scheduler import EmbeddingWorker, WorkerOptions

from test_freshness import add_dataset, add_image, coco_files, effnet  # noqa: F401 (fixture)


def _synthetic(db, n: int = 50, dim: int = 8) -> int:
    rng = np.random.default_rng(1)
    with db.transaction() as conn:
        model = register_model(conn, "synthetic-8", dim, False, active=False)
        ds = add_dataset(conn, "s")
        ids = [r[0] for r in conn.execute(
            "INSERT INTO images (dataset_id, sha256, width, height, format)"
            " SELECT %s, sha256(g::text::bytea), 32, 32, 'JPEG' FROM generate_series(1, %s) g RETURNING id",
            (ds, n)).fetchall()]
        vecs = rng.normal(size=(n, dim)).astype(np.float32)
        write_vectors(conn, model_id=model.id, item_kind="image", item_ids=ids,
                      vectors=vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    return model.id


def _activity(conn, pid: int):
    return conn.execute("SELECT query, wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()


def test_index_build_is_concurrent_and_lets_writes_through(db):
    """While the build waits for a transaction that writes vectors, other clients still write:
    a plain CREATE INDEX (SHARE lock) would queue every later INSERT behind it."""
    model_id = _synthetic(db)
    writer = db.connect()  # an open transaction that has written vectors: the build must wait for it
    writer.execute("UPDATE image_embeddings SET embedding = embedding WHERE image_id = 1")
    builder = db.connect(autocommit=True)
    built = []
    thread = threading.Thread(target=lambda: built.append(build_hnsw_index(builder, "image", model_id)))
    thread.start()
    try:
        with db.connect(autocommit=True) as watch:
            deadline = time.monotonic() + 30
            while "CREATE INDEX" not in (_activity(watch, builder.info.backend_pid) or ("",))[0]:
                assert time.monotonic() < deadline, "the build never started"
                time.sleep(0.05)
            query, _ = _activity(watch, builder.info.backend_pid)
            assert "CREATE INDEX CONCURRENTLY" in query, query
            assert thread.is_alive()  # waiting for the writer's transaction
            watch.execute("SET statement_timeout = '5s'")  # a plain CREATE INDEX would block this
            watch.execute("UPDATE image_embeddings SET embedding = embedding WHERE image_id = 2")
    finally:
        writer.commit()
        writer.close()
        thread.join(60)
        builder.close()
    assert built == [True]
    with db.connect() as conn:
        assert hnsw_index_state(conn, "image", model_id) == "ready"
        # the DDL's parameters reached the index
        ddl = conn.execute("SELECT pg_get_indexdef(to_regclass(%s))", (hnsw_index_name("image", model_id),)).fetchone()[0]
        assert "hnsw" in ddl and "m='16'" in ddl.replace(" ", "") and f"model_id = {model_id}" in ddl
        # no PL/pgSQL function can build an index any more (revision 0005)
        assert conn.execute("SELECT to_regproc('ensure_hnsw_index') IS NULL").fetchone()[0]


def test_an_invalid_index_from_an_interrupted_build_is_replaced(db):
    model_id = _synthetic(db)
    with db.connect(autocommit=True) as conn:
        build_hnsw_index(conn, "image", model_id)
        # what an interrupted CREATE INDEX CONCURRENTLY leaves behind: an index marked invalid
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)",
                     (hnsw_index_name("image", model_id),))
        assert hnsw_index_state(conn, "image", model_id) == "invalid"
        assert build_hnsw_index(conn, "image", model_id) is True
        assert hnsw_index_state(conn, "image", model_id) == "ready"
        assert build_hnsw_index(conn, "image", model_id) is False  # nothing to do


def _index_oid(conn, model_id: int):
    return conn.execute("SELECT to_regclass(%s)::oid", (hnsw_index_name("image", model_id),)).fetchone()[0]


def test_only_an_explicit_bulk_load_drops_the_index_and_a_killed_one_is_repaired(db, settings, effnet):
    with db.connect() as conn:
        ds = add_dataset(conn, "bulk")
        first = [add_image(conn, ds, p) for p in coco_files(2, start=70)]
        conn.commit()
    report = embed_pending(db, effnet, progress=False, num_workers=0, batch_size=8)
    assert report.embedded["image"] == 2
    with db.connect() as conn:
        model_id = conn.execute("SELECT id FROM embedding_models WHERE name = %s", (effnet.name,)).fetchone()[0]
        built_by_first_run = _index_oid(conn, model_id)
        assert built_by_first_run is not None  # the first run built the index it found missing
        for p in coco_files(3, start=72):  # a backlog bigger than what is stored
            add_image(conn, ds, p)
        conn.commit()

    # an ordinary run (the API job's and the worker's kind) inserts into the index: never drops it
    embed_pending(db, effnet, progress=False, num_workers=0, batch_size=8)
    with db.connect() as conn:
        assert _index_oid(conn, model_id) == built_by_first_run

    # `visearch embed --bulk` drops and rebuilds it
    with db.connect() as conn:
        for p in coco_files(6, start=80):  # more than the 5 stored: worth a rebuild
            add_image(conn, ds, p)
        conn.commit()
    embed_pending(db, effnet, progress=False, num_workers=0, batch_size=8, bulk=True)
    with db.connect() as conn:
        rebuilt = _index_oid(conn, model_id)
        assert rebuilt is not None and rebuilt != built_by_first_run

    # a bulk load killed after its drop, before its rebuild: the index is missing...
    with db.connect() as conn:
        drop_hnsw_index(conn, "image", model_id)
        conn.commit()
    (row,) = [r for r in collect_status(db, ["bulk"]).datasets if r["model"] == effnet.name]
    assert row["index_missing"] == ["image"]
    assert "index missing" in format_status(collect_status(db, ["bulk"]))

    # ...until any embedder runs, here a worker whose queue is empty
    worker = EmbeddingWorker(db, settings, WorkerOptions(interval=3600, decode_workers=0))
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        deadline = time.monotonic() + 120
        with db.connect(autocommit=True) as conn:
            while hnsw_index_state(conn, "image", model_id) != "ready":
                assert time.monotonic() < deadline, "the idle worker did not rebuild the index"
                time.sleep(0.2)
    finally:
        worker.stop()
        thread.join(60)
    (row,) = [r for r in collect_status(db, ["bulk"]).datasets if r["model"] == effnet.name]
    assert row["index_missing"] == [] and "index missing" not in format_status(collect_status(db, ["bulk"]))


@pytest.mark.parametrize("explicit", [True, False])
def test_the_api_job_embeds_every_active_model_whatever_visearch_model_says(db, settings, explicit):
    """README: VISEARCH_MODEL names the model of a new database; it pins nothing (only a typed
    --model does). The HTTP job used to treat a set VISEARCH_MODEL as a pin."""
    from visearch.http.jobs import EmbedJobs

    with db.transaction() as conn:
        register_model(conn, "model-a", 8, False)
        register_model(conn, "model-b", 8, False)
    env_settings = settings.model_copy(update={"model": "model-a"}) if explicit else settings
    assert ("model" in env_settings.model_fields_set) is explicit
    assert EmbedJobs(db, env_settings)._models() == ["model-a", "model-b"]
    assert EmbedJobs(db, env_settings, pinned=["model-b"])._models() == ["model-b"]


def test_status_during_an_embed_run_shows_it_with_a_rate_and_an_eta(db, effnet):
    """`visearch status` while `visearch embed` runs: the run is listed as a worker, embedding,
    with its rate, and the dataset gets an ETA (it used to say "no worker has run yet")."""
    with db.connect() as conn:
        ds = add_dataset(conn, "busy")
        for p in coco_files(6, start=110):
            add_image(conn, ds, p)
        conn.commit()
    seen = []

    def look(items, seconds):
        if not seen:  # after the first committed batch, the run still going
            seen.append(collect_status(db, ["busy"]))

    embed_pending(db, effnet, progress=False, num_workers=0, batch_size=2, claim_size=2, on_batch=look)
    (during,) = seen
    (row,) = [r for r in during.datasets if r["model"] == effnet.name]
    (run,) = during.workers
    assert run["state"] == "embedding" and run["rate"] > 0 and run["items_done"] == 2
    assert row["workers"] == 1 and row["stale"] == 4 and row["eta_seconds"] > 0
    text = format_status(during)
    assert "no worker has run yet" not in text and "1 alive" in text
    (after,) = collect_status(db, ["busy"]).workers
    assert after["state"] == "stopped" and after["items_done"] == 6
