"""Issue 11 (hardening), the embedding queue: expired leases are not failed attempts, and
interactive writes (another client's INSERT, a single upload) are claimed before bulk backfills
(an ingest, a new model's backlog). Real PostgreSQL, real coco128 photos, the real queue SQL."""

from __future__ import annotations

import re
import time

from psycopg import sql

from visearch import catalog
from visearch.db import queue
from visearch.ingest import ingest_folder
from visearch.search import SearchRequest, search

from test_freshness import add_dataset, add_image, coco_files, fake_model
from test_worker import DROP_VECTOR_WRITE_GATE, count, install_vector_write_gate, wait_for
from test_worker import workers, write_log  # noqa: F401 (fixtures)


def _row(conn, image_id):
    return conn.execute(
        "SELECT attempts, claims, failed, priority FROM embedding_queue WHERE item_kind = 'image' AND item_id = %s",
        (image_id,)).fetchone()


def test_expired_leases_do_not_use_up_the_retry_budget(db):
    with db.connect() as conn:
        model = fake_model(conn, "m")
        image_id = add_image(conn, add_dataset(conn), coco_files(1)[0])
        conn.commit()
    with db.connect(autocommit=True) as conn:
        # three workers claim the item and die (SIGKILL leaves the claim to expire)
        for n in range(3):
            claims = queue.claim(conn, model_id=model, worker=f"dead-{n}", limit=10, lease_seconds=0.05)
            assert [c.item_id for c in claims] == [image_id]
            time.sleep(0.1)
        assert _row(conn, image_id)[:3] == (0, 3, False)
        # then one real failure: one attempt of max_attempts=3, retried later, not given up on
        claims = queue.claim(conn, model_id=model, worker="alive", limit=10, lease_seconds=60)
        with conn.transaction():
            queue.fail(conn, model_id=model, worker="alive", failures=[("image", image_id, "corrupt: boom")],
                       max_attempts=3, backoff_seconds=0)
        assert _row(conn, image_id)[:3] == (1, 4, False)
        for n in (2, 3):  # only real failures count
            queue.claim(conn, model_id=model, worker="alive", limit=10, lease_seconds=60)
            with conn.transaction():
                queue.fail(conn, model_id=model, worker="alive", failures=[("image", image_id, "corrupt: boom")],
                           max_attempts=3, backoff_seconds=0)
            assert _row(conn, image_id)[:3] == (n, 4 + n - 1, n == 3)


def test_interactive_writes_are_claimed_before_a_bulk_backlog(db, coco128, tmp_path):
    folder = tmp_path / "bulk"
    folder.mkdir()
    photos = coco_files(12)
    for p in photos[:10]:
        (folder / p.name).write_bytes(p.read_bytes())
    with db.connect() as conn:
        model = fake_model(conn, "m")
        conn.commit()
    report = ingest_folder(db, "bulk", folder, progress=False, workers=1)  # a backfill
    with db.connect() as conn:
        ds = conn.execute("SELECT id FROM datasets WHERE name = 'bulk'").fetchone()[0]
        assert {r[0] for r in conn.execute("SELECT priority FROM embedding_queue")} == {1}
        interactive = add_image(conn, ds, photos[10])  # another tool's INSERT, after the ingest
        conn.commit()
        assert _row(conn, interactive)[3] == 0
    upload = catalog.upload_image(db, ds, photos[11].read_bytes(), file_name="single.jpg")  # a single upload
    with db.connect(autocommit=True) as conn:
        assert _row(conn, upload.id)[3] == 0
        claims = queue.claim(conn, model_id=model, worker="w", limit=2, lease_seconds=60)
        assert {c.item_id for c in claims} == {interactive, upload.id}  # ahead of 10 older items
        # an interactive change to a bulk-queued image makes it interactive too
        first = conn.execute("SELECT min(item_id) FROM embedding_queue WHERE priority = 1").fetchone()[0]
        conn.execute("UPDATE images SET sha256 = sha256(sha256) WHERE id = %s", (first,))
        assert _row(conn, first)[3] == 0
        # the claim (`claim` of sql/queue/claim.sql itself, of any priority and of one) is served by the
        # (model, priority, enqueued_at) index, not a sort of the queue. Planned over a bulk backlog
        # of 5,000 more rows with the statistics brought up to date (as autovacuum keeps them),
        # rolled back after: over a dozen new rows the planner's choice between the queue's indexes
        # followed whatever statistics earlier tests left (a skip scan of embedding_queue_dataset
        # on the model alone, once, in suite order). Sequential scans, bitmap scans and sorts are
        # priced out, so the plan shows whether the statement's shape lets the index deliver its
        # order (a Sort stays in the plan when it cannot)
        with conn.transaction(force_rollback=True):
            conn.execute("INSERT INTO embedding_queue (model_id, item_kind, item_id, dataset_id, priority)"
                         " SELECT %s, 'image', 10000000 + g, %s, 1 FROM generate_series(1, 5000) g", (model, ds))
            conn.execute("ANALYZE embedding_queue")
            conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
                         " SET LOCAL enable_sort = off")
            for priority in (None, queue.INTERACTIVE):
                plan = "\n".join(r[0] for r in conn.execute(
                    sql.SQL("EXPLAIN ") + queue.claim_statement("claim"),
                    {"model_id": model, "worker": "w", "limit": 256, "lease_seconds": 60,
                     "dataset_ids": None, "priority": priority}))
                assert "embedding_queue_ready_priority" in plan and "Sort" not in plan, plan
            # so is the check a bulk round makes between batches: are interactive items waiting?
            plan = "\n".join(r[0] for r in conn.execute(
                sql.SQL("EXPLAIN ") + queue.claim_statement("waiting"),
                {"model_id": model, "priority": queue.INTERACTIVE, "dataset_ids": None}))
            assert "embedding_queue_ready_priority" in plan, plan
            # and the one the neighbour refresh makes after each batch: is anything claimable? An
            # index probe keyed by the model, stopping at the first ready row (the planner may
            # walk the queue's dataset index in step with the datasets' primary key)
            plan = "\n".join(r[0] for r in conn.execute(
                sql.SQL("EXPLAIN ") + queue.claim_statement("waiting"),
                {"model_id": model, "priority": None, "dataset_ids": None}))
            assert re.search(r"Index (Only )?Scan using embedding_queue_\w+ on embedding_queue q\s+\(.*\)\n"
                             r"\s+Index Cond: \(model_id = ", plan), plan
            assert "Seq Scan on embedding_queue" not in plan, plan
        assert queue.waiting(conn, model_id=model, priority=queue.INTERACTIVE)  # `first` above
        assert queue.waiting(conn, model_id=model, priority=queue.INTERACTIVE, dataset_ids=[ds + 1]) is False
    assert report.images_added == 10


def test_a_new_models_backlog_is_bulk(db):
    with db.connect() as conn:
        ds = add_dataset(conn)
        image_id = add_image(conn, ds, coco_files(1)[0])
        fake_model(conn, "later")  # registered after the image: its whole backlog is queued
        conn.commit()
        assert _row(conn, image_id)[3] == 1


def test_tagging_a_collection_while_its_images_are_deleted_tags_what_is_left(db):
    import threading

    from visearch.collections import service as collections

    with db.connect() as conn:
        ds = add_dataset(conn)
        ids = [add_image(conn, ds, p) for p in coco_files(4)]
        cid = conn.execute("INSERT INTO collections (owner, mode, model, exact, candidates)"
                           " VALUES ('alice', 'images', 'm', true, 4) RETURNING id").fetchone()[0]
        for rank, image_id in enumerate(ids, 1):
            conn.execute("INSERT INTO collection_items (collection_id, rank, image_id, score) VALUES (%s, %s, %s, 0.5)",
                         (cid, rank, image_id))
        conn.commit()
    deleter = db.connect()
    deleter.execute("DELETE FROM images WHERE id = %s", (ids[1],))  # not committed yet: holds the row
    result = {}
    tagger = threading.Thread(target=lambda: result.update(r=collections.tag_images(db, "alice", cid, ["cat"])))
    tagger.start()
    with db.connect(autocommit=True) as conn:  # the tag statement now waits for the deleting transaction
        wait_for(lambda: count(conn, "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                               deleter.info.backend_pid), 30, "the tag statement to wait for the delete")
    deleter.commit()
    deleter.close()
    tagger.join(30)
    r = result["r"]
    assert (r.images_tagged, r.images_gone, r.labels_added) == (3, [ids[1]], 3)
    with db.connect() as conn:
        labelled = {row[0] for row in conn.execute("SELECT image_id FROM image_labels")}
    assert labelled == {ids[0], ids[2], ids[3]}


def test_the_no_vectors_advice_names_a_command_that_exists(db):
    import re
    import shlex

    import pytest
    from click.testing import CliRunner

    from visearch.cli import cli
    from visearch.db.models import get_model
    from visearch.errors import NotFoundError

    with db.connect() as conn, pytest.raises(NotFoundError) as info:
        get_model(conn, "openclip")
    command = re.search(r"`(visearch [^`]+)`", str(info.value)).group(1)
    args = shlex.split(command)[1:]
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, (command, result.output)
    assert "Embed every image and box" in result.output


def test_an_interactive_write_waits_for_one_batch_of_a_backfill_not_the_whole_claim(
        db, workers, write_log, cifar10, tmp_path):
    """A real worker drains a real bulk backlog (40 CIFAR-10 photos claimed at once, batches of
    4). An interactive INSERT committed while the worker is inside its second batch is embedded
    after that batch, ahead of the other 32 claimed items, and before the backlog is done.
    Mid-batch by construction: the worker's vector writes wait at a gate (an advisory lock this
    test holds) once the first batch is written, and the insert is committed there."""

    batch, backlog = 4, 40
    folder = tmp_path / "bulk"
    folder.mkdir()
    for n, path in enumerate(sorted((cifar10 / "cat").glob("*.jpg"))[:backlog]):
        (folder / f"{n:03d}.jpg").write_bytes(path.read_bytes())
    with db.connect() as conn:
        install_vector_write_gate(conn, after=batch, lock=7778)
        conn.commit()
    gate = db.connect(autocommit=True)
    gate.execute("SELECT pg_advisory_lock(7778)")
    try:
        worker = workers("worker-bulk", "--batch-size", str(batch), "--claim-size", str(backlog))
        worker.wait_ready(db)
        ingest_folder(db, "bulk", folder, progress=False, workers=1)  # the backfill (bulk priority)
        with db.connect(autocommit=True) as conn:
            wait_for(lambda: conn.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 7778 AND NOT granted"
            ).fetchone(), 120, f"the worker to reach its second batch\n{worker.output}")
            written_before = count(conn, "SELECT count(*) FROM test_vector_writes")
            # the rest of the backlog is claimed: the old worker embedded all of it first
            assert count(conn, "SELECT count(*) FROM embedding_queue WHERE claimed_by IS NOT NULL") == backlog - batch
            ds = conn.execute("SELECT id FROM datasets WHERE name = 'bulk'").fetchone()[0]
            with conn.transaction():  # another client's INSERT: interactive
                interactive = add_image(conn, ds, sorted((cifar10 / "dog").glob("*.jpg"))[0])
    finally:
        gate.close()  # opens the gate
    with db.connect(autocommit=True) as conn:
        wait_for(lambda: count(conn, "SELECT count(*) FROM embedding_queue") == 0, 120,
                 f"the backlog to drain\n{worker.output}")
        # stopped first: its closing neighbour refresh reads image_embeddings, and dropping the
        # gate trigger under it deadlocked once on a loaded machine
        assert worker.stop() == 0
        conn.execute(DROP_VECTOR_WRITE_GATE)
        order = [r[0] for r in conn.execute(
            "SELECT item_id FROM test_vector_writes WHERE item_kind = 'image' ORDER BY at")]
    assert written_before == batch and len(order) == backlog + 1 == len(set(order))
    position = order.index(interactive)
    # bulk items written after the insert committed and before it: the batch in flight, no more
    assert position - written_before <= batch, (position, written_before)
    assert len(order) - position - 1 >= backlog - 3 * batch  # the backlog was far from done
    assert search(db, SearchRequest(image_ids=[interactive], limit=1)).hits[0].image_id == interactive


def test_the_closing_neighbour_refresh_gives_way_to_queued_items(db):
    """The near-duplicate refresh that ends an embed run stops after one batch while anything is
    claimable (new rows once waited minutes behind a 10k backfill's refresh), and finishes when
    the queue is empty. Real vectors, a real HNSW index, the real refresh function."""
    import numpy as np

    from visearch.db.vectors import build_hnsw_index, write_vectors
    from visearch.embed import refresh_neighbour_edges

    with db.connect(autocommit=True) as conn:
        with conn.transaction():
            model = fake_model(conn, "m")
            ds = add_dataset(conn)
            ids = [r[0] for r in conn.execute(
                "INSERT INTO images (dataset_id, sha256, width, height, format)"
                " SELECT %s, sha256(g::text::bytea), 32, 32, 'JPEG' FROM generate_series(1, 12) g RETURNING id",
                (ds,))]  # queued for model m, interactive
            vecs = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
            write_vectors(conn, model_id=model, item_kind="image", item_ids=ids[:10],
                          vectors=vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
        assert build_hnsw_index(conn, "image", model)

        def pending() -> int:
            return conn.execute("SELECT count(*) FROM neighbour_pending WHERE model_id = %s", (model,)).fetchone()[0]

        assert pending() == 10 and queue.waiting(conn, model_id=model)
        assert refresh_neighbour_edges(conn, model, batch=4) == 4  # one batch, then gives way
        assert pending() == 6
        assert refresh_neighbour_edges(conn, model, dataset_ids=[ds + 1], batch=4) == 6  # nothing of its datasets queued
        conn.execute("DELETE FROM neighbour_edges")
        conn.execute("INSERT INTO neighbour_pending (model_id, item_kind, item_id)"
                     " SELECT %s, 'image', unnest(%s::bigint[])", (model, ids[:10]))
        conn.execute("DELETE FROM embedding_queue")  # drained
        assert refresh_neighbour_edges(conn, model, batch=4) == 10 and pending() == 0
        assert conn.execute("SELECT count(*) FROM neighbour_edges").fetchone()[0] > 0
