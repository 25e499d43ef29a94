"""visearch on a real Citus cluster (``visearch db distribute``): placement, per-shard HNSW,
search equal to a single node, queue triggers and NOTIFY, ingest, object search, a collection's
copy into a dataset, curation scoped by dataset.

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
from visearch.collections import collection_items, copy_images, list_collections
from visearch.config import Settings
from visearch.db.citus import distribute
from visearch.db.database import open_database
from visearch.db.vectors import ensure_hnsw_index
from visearch.search import SearchRequest, search
from visearch.search import score_histogram

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


def test_search_s_prepared_ranking_is_planned_per_call_on_every_shard_s_hnsw_index(citus_db, vectors):
    """On Citus the ranking runs as visearch.db.prepared runs it on one node (PREPARE, EXECUTE
    with the values written in), with custom plans: each shard's task must still order by that
    shard's HNSW index, the query vector bound (Citus returns stored vectors to the client)."""
    from psycopg import sql

    from visearch.db.prepared import run
    from visearch.search.service import plan_search, ranking, resolve_context

    settings = Settings()
    req = SearchRequest(model=MODEL, image_ids=[7], limit=10, exact=False)
    with citus_db.connect(autocommit=True) as conn:
        ctx = resolve_context(conn, req, settings, kind="image", needs_text=False)
        shape = plan_search(ctx, req, "image", settings)
        shape.params["query"] = ctx.stored_vectors[0].to_numpy()
        statement, config = ranking(shape, 10, settings, exact=False)
        rows, = run(conn, [(statement, shape.params)], settings=config)
        assert shape.query_from == "param" and rows[0][0] == 7  # the item itself, first
        conn.execute("SET citus.explain_all_tasks = on")
        conn.execute("SET citus.propagate_set_commands = 'local'")
        with conn.transaction():
            # (1,500 vectors a shard: reading them all and sorting is cheaper; forbid it, as above)
            for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                conn.execute(f"SET LOCAL {setting} = off")
            conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            args = ", ".join(sql.Literal(shape.params[name]).as_string(conn) for name in statement.params)
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN EXECUTE {statement.name}({args})"))
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
        # to the scores' tolerance: since 4c84514 one node reads a stored query vector inside the
        # statement while Citus binds it (as text), ~4e-8 apart on a score near 0.03
        assert h2.counts == h1.counts and h2.edges == pytest.approx(h1.edges, abs=1e-6)

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


def test_a_search_kept_as_a_collection_reads_back_as_on_a_single_node(citus_db, db, vectors):
    """POST /v1/search's service on Citus: the ranking kept as the owner's collection (items
    distributed on the collection id), its first page, a later page and the listing with counts,
    as on one node."""
    from visearch.collections import search_to_collection

    with db.connect() as conn:
        load_vectors(conn, vectors, model=MODEL)
    out = []
    for side in (db, citus_db):
        kept = search_to_collection(side, Settings(), "tester", SearchRequest(
            image_ids=[7], model=MODEL, exact=True, concepts=[ONE_PERCENT]), limit=5, depth=20)
        collection, later = collection_items(side, "tester", kept.collection.id, offset=5, limit=10)
        listed = [(c.items, c.images) for c in list_collections(side, "tester")]
        out.append(([(i.rank, i.image_id, round(i.score, 6), i.dataset, i.external_id) for i in kept.page + later],
                    (collection.items, collection.images), listed, kept.histogram.counts))
    assert out[1] == out[0] and len(out[0][0]) == 15 and out[0][2] == [(20, 20)]


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


def test_upgrade_of_a_distributed_schema_runs_only_revisions_marked_for_citus(citus_db, citus_url):
    """A schema distributed at an older revision: ``visearch db upgrade`` (and every command,
    which upgrades on first use) refuses a revision not marked ``runs_on_citus`` and changes
    nothing; it runs the ones marked (0015, the search's context function); after them it
    re-applies the Citus forms of the functions a migration re-creates."""
    import re

    from click.testing import CliRunner
    from visearch.cli import cli
    from visearch.db import migrate
    from visearch.db.database import DatabaseSetupError
    from visearch.resources import read_sql

    head = migrate.head_revision()
    # as if distributed when 0013 was the newest: 0014 (object vectors re-keyed on the image id)
    # runs on one node only. (The tables are the head's; the refusal must come before any SQL.)
    sql_set = "UPDATE alembic_version SET version_num = %s"
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute(sql_set, ("0013",))
    try:
        with pytest.raises(migrate.MigrationRefused, match=r"distributed with Citus .* at revision 0013, "
                                                           r"and revision\(s\) 0014 change"):
            migrate.upgrade(citus_url)
        with pytest.raises(DatabaseSetupError, match="visearch db distribute"):
            open_database(Settings(database_url=citus_url))
        result = CliRunner().invoke(cli, ["--database-url", citus_url, "db", "upgrade"])
        assert result.exit_code == 1 and "Move the data into a new database" in result.output, result.output
        assert migrate.current_revision(citus_url) == "0013"
        with psycopg.connect(citus_url, autocommit=True) as conn:  # 0014's SQL did not run
            assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'object_embeddings_fill_image_id'"
                                ).fetchone()[0] == 0
    finally:
        with psycopg.connect(citus_url, autocommit=True) as conn:
            conn.execute(sql_set, (head,))

    # a function-only migration re-creates 0013's curation functions in their one-node form
    # (as this does); the upgrade puts the Citus form back. From 0014: 0015 runs on Citus.
    text = read_sql("schema/0013_curation_scoped_neighbours.sql")
    with psycopg.connect(citus_url, autocommit=True) as conn:
        conn.execute("DROP FUNCTION search_context")
        conn.execute(sql_set, ("0014",))
        for name in ("refresh_neighbour_edges", "label_error_suspects"):
            conn.execute(re.search(rf"^CREATE OR REPLACE FUNCTION {name}\(.*?^END \$\$;", text, re.S | re.M).group(0))
        assert "va.image_id = e.image_id" not in conn.execute(
            "SELECT pg_get_functiondef('label_error_suspects'::regproc)").fetchone()[0]
    assert migrate.upgrade(citus_url) == head
    with psycopg.connect(citus_url, autocommit=True) as conn:
        assert "va.image_id = e.image_id" in conn.execute(
            "SELECT pg_get_functiondef('label_error_suspects'::regproc)").fetchone()[0]
        assert "f.item_dataset" in conn.execute(
            "SELECT pg_get_functiondef('refresh_neighbour_edges'::regproc)").fetchone()[0]
        assert conn.execute("SELECT to_regproc('search_context') IS NOT NULL").fetchone()[0]


# ---- real images on Citus: ingest, queue priority, object search, curation -------------------

COCO_IMAGES = 16  # images (and their boxes) embedded: enough boxes (~120) for neighbours
COPIED_IMAGES = 8  # images 1..8 copied (with labels and boxes) into a second dataset
COPY_DATASET = "coco128 copy"
OWNER = "citus-test"


def _collection_of(conn, shas: list[bytes]) -> int:
    """A collection (as a search leaves it) of the coco128 images with these sha256s, each
    labelled 'person' by hand first (so the copy has labels to carry); returns its id."""
    # the reference table first: Citus refuses to write one after a parallel write to shards
    cid = conn.execute("INSERT INTO collections (owner, mode, model, exact, candidates)"
                       " VALUES (%s, 'images', 'efficientnet-lite0', true, %s) RETURNING id",
                       (OWNER, len(shas))).fetchone()[0]
    conn.execute("INSERT INTO image_labels (image_id, concept_id, source) SELECT i.id, c.id, 'manual'"
                 " FROM images i CROSS JOIN concepts c WHERE i.sha256 = ANY (%s) AND c.name = 'person'"
                 " ON CONFLICT DO NOTHING", (shas,))
    ids = [r[0] for r in conn.execute("SELECT id FROM images WHERE sha256 = ANY (%s) ORDER BY id", (shas,))]
    conn.execute("INSERT INTO collection_items (collection_id, rank, image_id, score)"
                 " SELECT %s, r, i, 1 - r / 100.0 FROM unnest(%s::bigint[]) WITH ORDINALITY AS t (i, r)", (cid, ids))
    return cid


def _copy_concurrently(db, shas: list[bytes]):
    """Two copies of one collection into COPY_DATASET started while the dataset's lock is held
    elsewhere, so both wait for it and then run one after the other: one copies every image,
    the other finds them all there (no unique index on (dataset, sha256) on Citus: only the
    lock and the anti-join keep one image per content). Returns both reports."""
    import threading
    import time

    from visearch.ingest.writer import ensure_dataset, lock_dataset_images

    with db.transaction() as conn:
        cid = _collection_of(conn, shas)
        dataset_id = ensure_dataset(conn, COPY_DATASET)
    reports, errors = [], []

    def copy():
        try:
            reports.append(copy_images(db, OWNER, cid, COPY_DATASET, with_annotations=True))
        except Exception as e:  # noqa: BLE001 (reported by the assertion below)
            errors.append(e)

    with db.connect() as holder, db.connect() as probe:
        lock_dataset_images(holder, dataset_id)
        threads = [threading.Thread(target=copy) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while probe.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                            ).fetchone()[0] < 2 and time.monotonic() < deadline:
            probe.rollback()
            time.sleep(0.05)
        waiting = probe.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0]
        holder.rollback()  # releases the lock
        for t in threads:
            t.join(60)
    assert waiting == 2 and not errors, (waiting, errors)
    return reports


def _give_copies_vectors(db) -> None:
    """The copies' image and box vectors: each its original's, turned by a small random angle
    (cosine similarity ~0.9988), so an item's copy is its nearest neighbour, in another dataset,
    with no exact ties."""
    rng = np.random.default_rng(7)

    def turned(v):
        v = np.asarray(v, dtype=np.float64)
        noise = rng.standard_normal(v.shape)
        w = v + 0.05 * noise / np.linalg.norm(noise)
        return (w / np.linalg.norm(w)).astype(np.float32)

    with db.transaction() as conn:
        model_id = conn.execute("SELECT id FROM embedding_models").fetchone()[0]
        conn.execute("DELETE FROM embedding_queue")
        copies = dict(conn.execute("SELECT i.sha256, i.id FROM images i JOIN datasets d ON d.id = i.dataset_id"
                                   " WHERE d.name = %s", (COPY_DATASET,)).fetchall())
        for sha, vec in conn.execute("SELECT i.sha256, e.embedding FROM image_embeddings e JOIN images i"
                                     " ON i.id = e.image_id WHERE i.sha256 = ANY (%s) ORDER BY i.id",
                                     (list(copies),)).fetchall():
            conn.execute("INSERT INTO image_embeddings (model_id, image_id, embedding) VALUES (%s, %s, %s)",
                         (model_id, copies[sha], turned(vec.to_numpy())))
        boxes = {(i, x): a for a, i, x in conn.execute(
            "SELECT id, image_id, external_id FROM annotations WHERE image_id = ANY (%s)", (list(copies.values()),))}
        for sha, ext, vec in conn.execute(
                "SELECT i.sha256, a.external_id, e.embedding FROM object_embeddings e"
                " JOIN annotations a ON a.id = e.annotation_id AND a.image_id = e.image_id"
                " JOIN images i ON i.id = a.image_id WHERE i.sha256 = ANY (%s) AND i.id <> ALL (%s)"
                " ORDER BY a.id", (list(copies), list(copies.values()))).fetchall():
            image_id = copies[bytes(sha)]
            conn.execute("INSERT INTO object_embeddings (model_id, annotation_id, image_id, embedding)"
                         " VALUES (%s, %s, %s, %s)", (model_id, boxes[(image_id, ext)], image_id, turned(vec.to_numpy())))


def _refresh_all_neighbours(conn) -> None:
    """Drop the neighbour edges and look up every vector's neighbours again."""
    from visearch.curation.duplicates import refresh_neighbours

    model_id = conn.execute("SELECT id FROM embedding_models").fetchone()[0]
    conn.execute("DELETE FROM neighbour_edges")
    conn.execute("INSERT INTO neighbour_pending (model_id, item_kind, item_id)"
                 " SELECT model_id, 'image', image_id FROM image_embeddings ON CONFLICT DO NOTHING")
    conn.execute("INSERT INTO neighbour_pending (model_id, item_kind, item_id)"
                 " SELECT model_id, 'object', annotation_id FROM object_embeddings ON CONFLICT DO NOTHING")
    conn.commit()
    refresh_neighbours(conn, model_id)


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
        with db.connect() as conn:
            shas = [bytes(r[0]) for r in conn.execute(
                "SELECT sha256 FROM images WHERE id <= %s ORDER BY id", (COPIED_IMAGES,))]
        db.copy_reports = _copy_concurrently(db, shas)
        _give_copies_vectors(db)
        with db.connect() as conn:  # every item's neighbours again, now with the copies there
            _refresh_all_neighbours(conn)
        db.model = model
        yield db, priorities, reports
    finally:
        db.close()
        drop_database(CITUS_URL, url)


def _by_external_id(conn, kind: str) -> dict[int, tuple[str, str]]:
    """id -> a name that is the same on both databases: (dataset, image sha256) or (dataset, COCO
    annotation id)."""
    if kind == "image":
        return {i: (d, s.hex()) for i, d, s in conn.execute(
            "SELECT i.id, d.name, i.sha256 FROM images i JOIN datasets d ON d.id = i.dataset_id")}
    return {a: (d, e) for a, d, e in conn.execute(
        "SELECT a.id, d.name, a.external_id FROM annotations a JOIN images i ON i.id = a.image_id"
        " JOIN datasets d ON d.id = i.dataset_id")}


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
        shas = [bytes(r[0]) for r in conn.execute(
            "SELECT sha256 FROM images WHERE id <= %s ORDER BY id", (COPIED_IMAGES,))]
        images = conn.execute("SELECT d.name, i.sha256, e.embedding FROM image_embeddings e"
                              " JOIN images i ON i.id = e.image_id JOIN datasets d ON d.id = i.dataset_id").fetchall()
        boxes = conn.execute("SELECT d.name, a.external_id, e.embedding FROM object_embeddings e"
                             " JOIN annotations a ON a.id = e.annotation_id AND a.image_id = e.image_id"
                             " JOIN images i ON i.id = a.image_id JOIN datasets d ON d.id = i.dataset_id").fetchall()
    with database.transaction() as conn:
        cid = _collection_of(conn, shas)
    database.copy_report = copy_images(database, OWNER, cid, COPY_DATASET, create=True, with_annotations=True)
    model = cdb.model
    with database.transaction() as conn:
        register_vector(conn)
        model_id = register_model(conn, model.name, model.dim, model.embeds_text).id
        conn.execute("DELETE FROM embedding_queue")
        for name, sha, vec in images:
            conn.execute("INSERT INTO image_embeddings (model_id, image_id, embedding) SELECT %s, i.id, %s"
                         " FROM images i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = %s AND i.sha256 = %s",
                         (model_id, vec, name, sha))
        for name, ext, vec in boxes:  # without image_id: 0014's trigger fills it in
            conn.execute("INSERT INTO object_embeddings (model_id, annotation_id, embedding) SELECT %s, a.id, %s"
                         " FROM annotations a JOIN images i ON i.id = a.image_id JOIN datasets d ON d.id = i.dataset_id"
                         " WHERE d.name = %s AND a.external_id = %s", (model_id, vec, name, ext))
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
        assert conn.execute("SELECT count(*), count(DISTINCT sha256) FROM images i JOIN datasets d"
                            " ON d.id = i.dataset_id WHERE d.name = 'coco128'").fetchone() == (128, 128)


def _copied_rows(conn) -> dict[str, list]:
    """What a copy into COPY_DATASET wrote, by content: images (with their bytes' md5), labels, boxes."""
    where = " JOIN datasets d ON d.id = i.dataset_id WHERE d.name = %s ORDER BY 1, 2, 3"
    return {
        "images": conn.execute("SELECT encode(i.sha256, 'hex'), i.width, i.height, i.format, i.file_name,"
                               " i.external_id, i.metadata, md5(c.content) FROM images i"
                               " JOIN image_content c ON c.image_id = i.id" + where, (COPY_DATASET,)).fetchall(),
        "labels": conn.execute("SELECT encode(i.sha256, 'hex'), k.name, l.source FROM image_labels l"
                               " JOIN images i ON i.id = l.image_id JOIN concepts k ON k.id = l.concept_id" + where,
                               (COPY_DATASET,)).fetchall(),
        "boxes": conn.execute("SELECT encode(i.sha256, 'hex'), a.external_id, k.name, a.bbox_x, a.bbox_y, a.bbox_w,"
                              " a.bbox_h, a.iscrowd, a.source FROM annotations a JOIN images i ON i.id = a.image_id"
                              " JOIN concepts k ON k.id = a.concept_id" + where, (COPY_DATASET,)).fetchall(),
    }


def test_copying_a_collection_into_a_dataset_keeps_one_image_per_content_and_equals_a_single_node(
        citus_coco, single_coco):
    """POST /v1/collections/{id}/copy's service on Citus: two copies that ran one after the other
    under the dataset's lock (the fixture) add each image once, with the same rows, bytes,
    labels and boxes as the same copy on one node."""
    cdb, _, _ = citus_coco
    reports = sorted((r.images_copied, r.images_existing, r.labels_copied, r.annotations_copied)
                     for r in cdb.copy_reports)
    one = single_coco.copy_report
    assert (one.images, one.images_copied, one.images_existing, one.labels_copied) == (
        COPIED_IMAGES, COPIED_IMAGES, 0, COPIED_IMAGES)
    assert reports == [(0, COPIED_IMAGES, 0, 0), (COPIED_IMAGES, 0, COPIED_IMAGES, one.annotations_copied)]
    with cdb.connect() as cconn, single_coco.connect() as sconn:
        for conn in (cconn, sconn):
            assert conn.execute("SELECT count(*), count(DISTINCT sha256) FROM images i JOIN datasets d"
                                " ON d.id = i.dataset_id WHERE d.name = %s", (COPY_DATASET,)).fetchone() == (
                COPIED_IMAGES, COPIED_IMAGES)
        copied = _copied_rows(cconn)
        assert len(copied["boxes"]) == one.annotations_copied > 0
        assert copied == _copied_rows(sconn)
    # again: nothing new, on Citus too
    cid = next(c.id for c in list_collections(cdb, OWNER))
    again = copy_images(cdb, OWNER, cid, COPY_DATASET, with_annotations=True)
    assert (again.images, again.images_copied, again.images_existing) == (COPIED_IMAGES, 0, COPIED_IMAGES)


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
    neighbours per item on Citus (sql/citus/curation.sql); same answers as one node, also where
    they are scoped to a dataset (revision 0013) and each copied item's nearest neighbour is its
    copy in the other dataset."""
    cdb, _, _ = citus_coco
    name = cdb.model.name
    out = {}
    for side, db in (("citus", cdb), ("single", single_coco)):
        with db.connect() as conn:
            names = _by_external_id(conn, "object")
            images = _by_external_id(conn, "image")
            coco, copy = (conn.execute("SELECT id FROM datasets WHERE name = %s", (d,)).fetchone()[0]
                          for d in ("coco128", COPY_DATASET))
            out[side] = {
                # k = 1: a copied box's nearest is its copy; scoped, its nearest in coco128 too
                "scoped_pairs": _mapped_pairs(conn.execute(
                    "SELECT * FROM near_duplicate_pairs(%s, 'object', %s, 1, 0.5)", (name, coco)).fetchall(), names),
                "scoped_image_pairs": _mapped_pairs(conn.execute(
                    "SELECT * FROM near_duplicate_pairs(%s, 'image', %s, 1, 0.5)", (name, copy)).fetchall(), images),
                # voters from coco128 only (not the copies, which share the item's label)
                "scoped_suspects": sorted((names[r[0]], r[2], r[3], round(r[4], 5), round(r[5], 5)) for r in conn.execute(
                    "SELECT item_id, image_id, concept, looks_like, share, agreeing"
                    " FROM label_error_suspects(%s, 'object', %s, 5, 0.5)", (name, coco))),
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
    for key in ("pairs", "suspects", "edges", "scoped_pairs", "scoped_image_pairs", "scoped_suspects"):
        assert out["citus"][key], key
    # the scoped lookup found in-dataset pairs of copied boxes, which an unscoped k = 1 misses
    pairs = out["citus"]["scoped_pairs"]
    copied = {a[1] for a, b, _ in pairs if {a[0], b[0]} == {"coco128", COPY_DATASET} and a[1] == b[1]}
    assert copied and any(a[0] == b[0] == "coco128" and copied & {a[1], b[1]} for a, b, _ in pairs)
    for key, value in out["citus"].items():
        assert value == out["single"][key], key


def test_a_collection_is_saved_tagged_and_exported_on_citus_as_on_a_single_node(citus_coco, single_coco):
    """What a person does with a search's collection (save it, tag its images, export it as COCO
    and CSV) on the distributed schema, next to the same on one node: the same names, reports,
    labels and exported boxes (ids differ between the two databases: compared by content)."""
    from visearch.collections import save_collection, search_to_collection, tag_images
    from visearch.collections.export import export_coco, export_csv

    cdb, _, _ = citus_coco
    out = []
    for side in (single_coco, cdb):
        got = []
        for mode in ("objects", "images"):
            kept = search_to_collection(side, Settings(), OWNER, SearchRequest(
                mode=mode, concepts=["person"], datasets=["coco128"], exact=True, model=cdb.model.name),
                limit=5, depth=12)
            cid = kept.collection.id
            saved = save_collection(side, OWNER, cid, f"people {mode}")
            again = save_collection(side, OWNER, cid, f"people {mode} renamed")  # a saved one is renamed
            report = tag_images(side, OWNER, cid, [f"citus-{mode}"])
            coco = export_coco(side, OWNER, cid)
            files = {i["id"]: i["file_name"] for i in coco["images"]}
            boxes = sorted((files[a["image_id"]], tuple(round(v, 2) for v in a["bbox"]),
                            next(c["name"] for c in coco["categories"] if c["id"] == a["category_id"]))
                           for a in coco["annotations"])
            rows = [line.split(",") for line in export_csv(side, OWNER, cid).splitlines()[1:]]
            with side.connect() as conn:
                labelled = conn.execute(
                    "SELECT count(*) FROM image_labels l JOIN concepts k ON k.id = l.concept_id WHERE k.name = %s",
                    (f"citus-{mode}",)).fetchone()[0]
            got.append((saved.saved, saved.name, again.name, again.saved_at == saved.saved_at,
                        (report.images, report.images_tagged, report.labels_added, report.images_gone), labelled,
                        len(coco["images"]), boxes, [(r[0], r[1], r[4], r[5]) for r in rows]))
        out.append(got)
    assert out[1] == out[0]
    objects, images = out[0]
    assert objects[1:3] == ("people objects", "people objects renamed") and objects[3]
    assert objects[5] == objects[4][1] > 0 and len(objects[7]) >= 12 and len(images[8]) == images[6] > 0
