"""``visearch worker`` as real processes against the test database: rows written by another
client become searchable within seconds; a worker killed mid-batch loses nothing; two workers
never write the same item twice; SIGTERM stops cleanly.

How "never twice" is proven: a trigger installed by the test on the vector tables logs every
INSERT or UPDATE of a vector with the writer's ``application_name`` (each worker process runs
with its own ``PGAPPNAME``). A second write of any item, by anyone, shows up as a second row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visearch.search import SearchRequest, search

from test_freshness import add_box, add_dataset, add_image, coco_files, effnet, tiny_clip_spec  # noqa: F401 (fixtures)

VISEARCH = str(Path(sys.executable).with_name("visearch"))
#: A row written by another client must be embedded (and searchable) within this many seconds
#: of its commit while a worker is running (measured: ~1-2 s on a 2-core CPU).
FRESHNESS_BOUND_S = 15.0
#: Starting a worker: Python + torch imports + model load, on a busy 2-core machine.
START_TIMEOUT_S = 120.0


@pytest.fixture
def write_log(db):
    """Log every vector write (item, writer) in ``test_vector_writes``; removed afterwards."""
    with db.connect() as conn:
        conn.execute("""
            CREATE TABLE test_vector_writes (
                item_kind text, item_id bigint, model_id integer,
                writer text DEFAULT current_setting('application_name'),
                at timestamptz DEFAULT clock_timestamp());
            CREATE FUNCTION test_log_vector_write() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_TABLE_NAME = 'image_embeddings' THEN
                    INSERT INTO test_vector_writes (item_kind, item_id, model_id)
                    VALUES ('image', NEW.image_id, NEW.model_id);
                ELSE
                    INSERT INTO test_vector_writes (item_kind, item_id, model_id)
                    VALUES ('object', NEW.annotation_id, NEW.model_id);
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER test_log_image_vector AFTER INSERT OR UPDATE ON image_embeddings
                FOR EACH ROW EXECUTE FUNCTION test_log_vector_write();
            CREATE TRIGGER test_log_object_vector AFTER INSERT OR UPDATE ON object_embeddings
                FOR EACH ROW EXECUTE FUNCTION test_log_vector_write();
        """)
        conn.commit()
    yield
    with db.connect() as conn:
        conn.execute("""
            DROP TRIGGER test_log_image_vector ON image_embeddings;
            DROP TRIGGER test_log_object_vector ON object_embeddings;
            DROP FUNCTION test_log_vector_write;
            DROP TABLE test_vector_writes;
        """)
        conn.commit()


def install_vector_write_gate(conn, *, after: int, lock: int) -> None:
    """A gate on image vector writes (needs ``write_log``): once ``after`` vectors are logged, the
    next write waits for the shared advisory lock ``lock``, inside the writer's transaction; the
    test holds that lock to stop a worker mid-batch. Drop it with DROP_VECTOR_WRITE_GATE."""
    conn.execute(f"""
        CREATE FUNCTION test_gate_vector_write() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF (SELECT count(*) FROM test_vector_writes) >= {int(after)} THEN
                PERFORM pg_advisory_xact_lock_shared({int(lock)});
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_gate_image_vector BEFORE INSERT ON image_embeddings
            FOR EACH ROW EXECUTE FUNCTION test_gate_vector_write();
    """)


DROP_VECTOR_WRITE_GATE = ("DROP TRIGGER test_gate_image_vector ON image_embeddings;"
                          " DROP FUNCTION test_gate_vector_write;")


class Worker:
    """A ``visearch worker`` subprocess; output goes to a log file (read on failure)."""

    def __init__(self, database, tmp_path: Path, name: str, *args: str):
        self.name = name
        self.log_path = tmp_path / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VISEARCH_")}
        env.update(VISEARCH_DATABASE_URL=database.url, PGAPPNAME=name, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([VISEARCH, "worker", *args], stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_id(self, conn) -> str | None:
        row = conn.execute("SELECT worker_id FROM embedding_workers WHERE pid = %s", (self.proc.pid,)).fetchone()
        return row[0] if row else None

    def wait_ready(self, db, timeout: float = START_TIMEOUT_S) -> str:
        """Wait until the worker has loaded its model and registered (it then listens)."""
        deadline = time.monotonic() + timeout
        with db.connect(autocommit=True) as conn:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"worker {self.name} exited:\n{self.output}"
                worker_id = self.worker_id(conn)
                if worker_id:
                    return worker_id
                time.sleep(0.2)
        raise AssertionError(f"worker {self.name} not ready after {timeout} s:\n{self.output}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and its decode processes
        self.proc.wait(30)
        self._log.close()


@pytest.fixture
def workers(database, tmp_path):
    started: list[Worker] = []

    def start(name, *args) -> Worker:
        w = Worker(database, tmp_path, name, *args)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.kill()


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def count(conn, sql, *args) -> int:
    return conn.execute(sql, args).fetchone()[0]


def test_rows_written_by_another_client_are_searchable_within_seconds(db, workers):
    """The interval is an hour, so only LISTEN/NOTIFY can explain a pickup within the bound."""
    with db.connect() as conn:
        ds = add_dataset(conn, "live")
        conn.commit()
    worker = workers("worker-live", "--interval", "3600")
    worker.wait_ready(db)

    photo = coco_files(1, start=50)[0]
    with db.connect() as conn:  # an annotation tool writing with plain SQL
        image_id = add_image(conn, ds, photo)
        box = add_box(conn, image_id, 100, 100, 200, 150)
        conn.commit()
    committed = time.monotonic()
    with db.connect(autocommit=True) as conn:
        wait_for(lambda: count(conn, "SELECT count(*) FROM image_embeddings WHERE image_id = %s", image_id)
                 and count(conn, "SELECT count(*) FROM object_embeddings WHERE annotation_id = %s", box),
                 FRESHNESS_BOUND_S, f"the new rows to be embedded\n{worker.output}")
    latency = time.monotonic() - committed
    result = search(db, SearchRequest(image=photo.read_bytes(), datasets=["live"], limit=1))
    assert result.hits[0].image_id == image_id and result.hits[0].score > 0.99
    assert result.coverage is None
    objects = search(db, SearchRequest(mode="objects", annotation_id=box, limit=1))
    assert objects.hits[0].annotation_id == box

    assert worker.stop(signal.SIGTERM) == 0, worker.output
    with db.connect() as conn:
        assert conn.execute("SELECT DISTINCT state FROM embedding_workers").fetchall() == [("stopped",)]
        assert count(conn, "SELECT count(*) FROM embedding_queue") == 0
    out = worker.output
    assert "items/s), backlog 0" in out  # one line per batch: items, rate, backlog
    assert "stopped after" in out
    print(f"insert -> searchable: {latency:.2f} s")


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(db, workers, write_log):
    n = 16
    with db.connect() as conn:
        ds = add_dataset(conn, "kill")
        ids = [add_image(conn, ds, p) for p in coco_files(n, start=60)]
        # A gate: once 2 vectors are committed, the next vector write waits for an advisory lock
        # this test holds, inside the worker's batch transaction (queue rows deleted, more items
        # claimed). The worker is killed there: mid-batch by construction, not by timing.
        install_vector_write_gate(conn, after=2, lock=7777)
        conn.commit()
    gate = db.connect(autocommit=True)
    gate.execute("SELECT pg_advisory_lock(7777)")
    try:
        first = workers("worker-killed", "--lease", "3", "--batch-size", "2", "--claim-size", "6",
                        "--decode-workers", "0", "--interval", "1")
        victim = first.wait_ready(db)
        with db.connect(autocommit=True) as conn:
            blocked = wait_for(lambda: conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 7777 AND NOT granted"
            ).fetchone(), 120, f"the first worker to reach its second batch\n{first.output}")
            first.kill()
            conn.execute("SELECT pg_terminate_backend(%s)", blocked)  # its server side, at once
            orphaned = count(conn, "SELECT count(*) FROM embedding_queue WHERE claimed_by = %s", victim)
            done_before = count(conn, "SELECT count(*) FROM image_embeddings")
    finally:
        gate.close()  # opens the gate
        with db.connect() as conn:
            conn.execute(DROP_VECTOR_WRITE_GATE)
            conn.commit()
    assert done_before == 2 and orphaned > 0  # one batch written, more items claimed and lost

    second = workers("worker-fresh", "--lease", "3", "--batch-size", "2", "--interval", "1")
    second.wait_ready(db)
    with db.connect(autocommit=True) as conn:
        wait_for(lambda: count(conn, "SELECT count(*) FROM embedding_queue") == 0, 120,
                 f"the backlog to drain\n{second.output}")
        writes = conn.execute("SELECT item_id, count(*), array_agg(writer) FROM test_vector_writes"
                              " GROUP BY item_id ORDER BY item_id").fetchall()
        assert count(conn, "SELECT count(*) FROM image_embeddings") == n
        assert count(conn, "SELECT count(*) FROM embedding_queue WHERE claimed_by IS NOT NULL") == 0
    assert [i for i, _, _ in writes] == ids
    assert all(c == 1 for _, c, _ in writes), writes  # each item written exactly once
    by_writer = {w[0] for _, _, w in writes}
    assert by_writer == {"worker-killed", "worker-fresh"}
    assert sum(1 for _, _, w in writes if w == ["worker-fresh"]) == n - done_before
    assert second.stop() == 0


def test_two_workers_share_a_backlog_without_writing_any_item_twice(db, workers, write_log):
    with db.connect() as conn:
        ds = add_dataset(conn, "shared")
        conn.commit()
    a = workers("worker-a", "--batch-size", "2", "--claim-size", "4", "--decode-workers", "0")
    b = workers("worker-b", "--batch-size", "2", "--claim-size", "4", "--decode-workers", "0")
    a.wait_ready(db)
    b.wait_ready(db)
    n = 30
    with db.connect() as conn:  # one transaction, one notification: both workers wake at once
        ids = [add_image(conn, ds, p) for p in coco_files(n, start=80)]
        conn.commit()
    with db.connect(autocommit=True) as conn:
        wait_for(lambda: count(conn, "SELECT count(*) FROM embedding_queue") == 0, 120,
                 f"the backlog to drain\n{a.output}\n{b.output}")
        writes = conn.execute("SELECT item_id, count(*), min(writer) FROM test_vector_writes"
                              " GROUP BY item_id ORDER BY item_id").fetchall()
    assert [i for i, _, _ in writes] == ids
    assert all(c == 1 for _, c, _ in writes), writes
    per_worker = {w: sum(1 for *_, x in writes if x == w) for w in ("worker-a", "worker-b")}
    assert all(v > 0 for v in per_worker.values()), per_worker  # both really worked
    assert a.stop() == 0 and b.stop() == 0


def test_sigterm_mid_backlog_commits_the_batch_releases_claims_and_reports_progress(db, workers):
    n = 24
    with db.connect() as conn:
        ds = add_dataset(conn, "stop")
        add_image(conn, ds, coco_files(1, start=0)[0])  # embedded first: the index exists
        conn.commit()
    worker = workers("worker-stop", "--batch-size", "2", "--claim-size", "8", "--decode-workers", "0")
    worker_id = worker.wait_ready(db)
    with db.connect(autocommit=True) as conn:
        wait_for(lambda: count(conn, "SELECT count(*) FROM embedding_queue") == 0, 60, "the first image")
        with conn.transaction():
            for p in coco_files(n, start=100):
                add_image(conn, ds, p)
        from visearch.status import collect_status

        # while it runs, status shows a live worker with a rate and an ETA for the dataset
        row = wait_for(lambda: next((r for r in collect_status(db, ["stop"]).datasets
                                     if r["rate"] and r["eta_seconds"] is not None), None),
                       60, f"a rate and an ETA in status\n{worker.output}", poll=0.05)
        assert row["workers"] == 1 and row["stale"] > 0
        assert worker.stop(signal.SIGTERM, timeout=30) == 0, worker.output
        claimed = count(conn, "SELECT count(*) FROM embedding_queue WHERE claimed_by IS NOT NULL")
        left = count(conn, "SELECT count(*) FROM embedding_queue")
        attempts = count(conn, "SELECT coalesce(max(attempts), 0) FROM embedding_queue")
        embedded = count(conn, "SELECT count(*) FROM image_embeddings")
        state = conn.execute("SELECT state FROM embedding_workers WHERE worker_id = %s", (worker_id,)).fetchone()
    assert claimed == 0 and attempts == 0  # claims given back, without counting an attempt
    assert left > 0 and embedded + left == n + 1  # stopped early; nothing lost
    assert state == ("stopped",)


def test_worker_embeds_a_new_model_in_time_slices_and_searches_switch_when_it_covers(
        db, settings, effnet, tiny_clip_spec):
    """In-process worker (the tiny open_clip config is registered in this process only): with
    two active models it alternates between them in short slices until both are drained, and
    the default model of a search moves from the old model to the new one."""
    import threading

    from visearch.embed import embed_pending
    from visearch.admin import add_model
    from visearch.worker.scheduler import EmbeddingWorker, WorkerOptions

    with db.connect() as conn:
        ds = add_dataset(conn, "switch")
        ids = [add_image(conn, ds, p) for p in coco_files(12, start=30)]
        conn.commit()
    embed_pending(db, effnet, progress=False, num_workers=0)
    row, backlog = add_model(db, tiny_clip_spec)
    assert backlog == 12
    assert search(db, SearchRequest(image_ids=[ids[0]])).model == "efficientnet-lite0"

    worker = EmbeddingWorker(db, settings, WorkerOptions(
        interval=60, batch_size=1, claim_size=2, slice_seconds=0.05, decode_workers=0))
    thread = threading.Thread(target=worker.run, kwargs={"handle_signals": False})
    thread.start()
    try:
        with db.connect(autocommit=True) as conn:
            wait_for(lambda: count(conn, "SELECT count(*) FROM embedding_queue") == 0, 120, "both models drained")
            # counted before the fresh image: its notification (and the listener's first wake-up)
            # add passes of their own, which would make the check below pass without any slicing
            passes_to_drain = worker.passes
            fresh = add_image(conn, ds, coco_files(1, start=45)[0])  # both models embed it
            wait_for(lambda: count(conn, "SELECT count(*) FROM image_embeddings WHERE image_id = %s", fresh) == 2,
                     FRESHNESS_BOUND_S, "the fresh image with both models")
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert passes_to_drain > 2  # the slices ran out and passes went round again
    result = search(db, SearchRequest(image_ids=[ids[0]]))
    assert result.model == row.name and result.coverage is None
    # a search naming the old model still answers from the old model's own vectors
    named = search(db, SearchRequest(image_ids=[ids[0]], model="efficientnet-lite0", limit=2))
    assert named.model == "efficientnet-lite0" and named.coverage is None
    with db.connect() as conn:
        expected = conn.execute(
            "SELECT 1 - (a.embedding <=> b.embedding) FROM image_embeddings a, image_embeddings b"
            " JOIN embedding_models m ON m.id = b.model_id"
            " WHERE m.name = 'efficientnet-lite0' AND a.model_id = b.model_id AND a.image_id = %s"
            " AND b.image_id = %s", (ids[0], named.hits[1].image_id)).fetchone()[0]
    assert abs(named.hits[1].score - expected) < 1e-4
