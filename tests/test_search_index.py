"""How searches use their indexes, on 5,000 vectors: enough rows that PostgreSQL's planner
prefers an index (on coco128's 128 images a scan is cheaper, and it picks that). Each statement
shape is checked with EXPLAIN, and every search with a count of its round trips."""

from __future__ import annotations

import re
import tempfile

import numpy as np
import psycopg
import pytest

from visearch.db.database import Database
from visearch.db.models import register_model
from visearch.db.vectors import ensure_hnsw_index, write_vectors
from visearch.search import SearchRequest, search
from visearch.search.service import plan_search, resolve_context
from visearch.search.statements import hnsw_settings, render

from conftest import last_rows

N_BIG, N_SMALL, DIM = 4950, 50, 64
RARE, COMMON = 30, 2500  # images labelled #rare (0.6%) and #common (50%), all in 'big'


@pytest.fixture(scope="module")
def vectors_db(database):
    """Two datasets of random unit vectors: 'big' (4,950 images) and 'small' (50, i.e. 1%),
    labels #rare and #common on some of the big ones; built once for the module."""
    from conftest import truncate_all

    truncate_all(database)
    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((N_BIG + N_SMALL, DIM)).astype(np.float32)
    vecs[11] = vecs[10] + 0.01 * rng.standard_normal(DIM)  # one near-duplicate pair: images 11 and 12
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with database.transaction() as conn:
        model = register_model(conn, "synthetic-64", DIM, False, active=False)
        ids = []
        for name, n in (("big", N_BIG), ("small", N_SMALL)):
            dataset = conn.execute("INSERT INTO datasets (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]
            ids += [r[0] for r in conn.execute(
                "INSERT INTO images (dataset_id, sha256, width, height, format)"
                " SELECT %s, sha256((%s || g)::bytea), 32, 32, 'JPEG' FROM generate_series(1, %s) g"
                " RETURNING id", (dataset, name, n)).fetchall()]
        for tag, n in (("rare", RARE), ("common", COMMON)):
            concept = conn.execute("INSERT INTO concepts (name) VALUES (%s) RETURNING id", (tag,)).fetchone()[0]
            conn.execute("INSERT INTO image_labels (image_id, concept_id, source) SELECT unnest(%s::bigint[]), %s, 'test'",
                         (ids[1 : 1 + n * 3 : 3] if tag == "rare" else ids[: 2 * n : 2], concept))
        write_vectors(conn, model_id=model.id, item_kind="image", item_ids=ids, vectors=vecs)
        ensure_hnsw_index(conn, "image", model.id)
        conn.execute("ANALYZE")
    return database, ids, vecs


@pytest.fixture
def small_exact(settings):
    """Filters of at most 1,000 items are 'selective' (ranked exactly from their own index)."""
    return settings.model_copy(update={"exact_search_max_candidates": 1000})


def _explain(db, settings, **kw):
    req = SearchRequest(model="synthetic-64", **kw)
    with db.connect(autocommit=True) as conn:
        ctx = resolve_context(conn, req, settings, kind="image", needs_text=False)
        shape = plan_search(ctx, req, "image", settings)
        # by one stored image: the statement reads the query vector itself (an InitPlan)
        assert shape.query_from == "stored_image"
        plan = "\n".join(r[0] for r in conn.execute(
            psycopg.sql.SQL("EXPLAIN ") + shape.rank(), {**shape.params, "limit": 10}))
    return shape.driver, plan


def test_each_filter_class_gets_a_statement_that_uses_its_index(vectors_db, small_exact):
    db, ids, _ = vectors_db
    hnsw_scan = "Index Scan using image_embeddings_hnsw_model_1"
    driver, plan = _explain(db, small_exact, image_ids=[ids[0]])  # no filter
    assert driver == "hnsw" and hnsw_scan in plan, plan
    # the stored query vector read once, by primary key, and the HNSW index ordering by it
    assert "InitPlan" in plan and "Order By: ((embedding)::vector(64) <=> ((InitPlan" in plan, plan
    driver, plan = _explain(db, small_exact, image_ids=[ids[0]], concepts=["common"])  # 50%: broad
    assert driver == "hnsw" and hnsw_scan in plan, plan
    # the concept checked per row read from the index (a probe of its own index), never by
    # first hashing every item of the concept
    assert "image_labels_concept" in plan and "hashed SubPlan" not in plan, plan
    driver, plan = _explain(db, small_exact, image_ids=[ids[0]], datasets=["big"])  # 99%: broad
    assert driver == "hnsw" and hnsw_scan in plan, plan
    # selective: driven from the filter's own index, each vector fetched by primary key, exact
    driver, plan = _explain(db, small_exact, image_ids=[ids[0]], concepts=["rare"])
    assert driver == "by_concept" and "image_labels_concept" in plan and "hnsw" not in plan, plan
    assert "Seq Scan on image_embeddings" not in plan and "hnsw" not in plan, plan
    driver, plan = _explain(db, small_exact, image_ids=[ids[0]], datasets=["small"])
    assert driver == "by_dataset" and "images_dataset_external_id" in plan and "hnsw" not in plan, plan
    assert "Seq Scan on image_embeddings" not in plan and "hnsw" not in plan, plan
    # both: the smaller one drives, the other is checked per row
    driver, plan = _explain(db, small_exact, image_ids=[ids[0]], concepts=["rare"], datasets=["big"])
    assert driver == "by_concept", plan
    # exact on request, no selective filter: a scan of the model's vectors
    driver, plan = _explain(db, small_exact, image_ids=[ids[0]], exact=True)
    assert driver == "scan" and "hnsw" not in plan, plan


def test_exact_or_hnsw_follows_the_square_root_rule(vectors_db, settings):
    """A filter drives an exact ranking up to 4 * sqrt(rows * N) items, N being the model's
    HNSW index size (search_context()): here N = 5,000, so 895 items for a page of 10
    (#common's 2,500 images go through the index) and 2,829 for 100 (#common ranks exactly)."""
    db, ids, _ = vectors_db
    with db.connect(autocommit=True) as conn:
        for limit, cap, driver in ((10, 895, "hnsw"), (100, 2829, "by_concept")):
            req = SearchRequest(model="synthetic-64", image_ids=[ids[0]], concepts=["common"], limit=limit)
            ctx = resolve_context(conn, req, settings, kind="image", needs_text=False)
            assert ctx.exact_cap == cap and ctx.concept_size == min(COMMON, cap + 1)  # counted no further
            assert plan_search(ctx, req, "image", settings).driver == driver
        # never above Settings.exact_search_max_candidates
        low = settings.model_copy(update={"exact_search_max_candidates": 100})
        req = SearchRequest(model="synthetic-64", image_ids=[ids[0]], concepts=["rare"])
        ctx = resolve_context(conn, req, low, kind="image", needs_text=False)
        assert ctx.exact_cap == 100 and plan_search(ctx, req, "image", low).driver == "by_concept"
    assert search(db, SearchRequest(model="synthetic-64", image_ids=[ids[0]], concepts=["common"], limit=100),
                  settings).plan == "by_concept"


def test_hnsw_recall_at_10_against_exact_search(vectors_db, settings):
    db, ids, _ = vectors_db
    recalls = []
    for query_id in ids[:200:10]:
        req = dict(model="synthetic-64", image_ids=[query_id], limit=10)
        approx = search(db, SearchRequest(**req, exact=False), settings)
        exact = search(db, SearchRequest(**req, exact=True), settings)
        assert approx.plan == "hnsw" and not approx.exact and exact.exact
        recalls.append(len({h.image_id for h in approx.hits} & {h.image_id for h in exact.hits}) / 10)
    assert np.mean(recalls) >= 0.9


def test_a_rare_concept_through_the_index_fills_the_page_from_the_index(vectors_db, settings):
    """Forced through the HNSW index (EXPLAIN says it is), a 0.6% concept filter still returns
    k rows: the iterative scan found them (``exact`` stays false: no exact fallback ran), and
    they are the right ones. Left to choose, the search drives from the concept's own index."""
    db, ids, _ = vectors_db
    driver, plan = _explain(db, settings, image_ids=[ids[0]], concepts=["rare"], exact=False)
    assert driver == "hnsw" and "Index Scan using image_embeddings_hnsw_model_1" in plan, plan
    req = dict(model="synthetic-64", image_ids=[ids[0]], concepts=["rare"], limit=10)
    truth = search(db, SearchRequest(**req, exact=True), settings)
    via_index = search(db, SearchRequest(**req, exact=False), settings)
    assert not via_index.exact and via_index.plan == "hnsw"
    assert len(via_index.hits) == 10
    overlap = {h.image_id for h in via_index.hits} & {h.image_id for h in truth.hits}
    assert len(overlap) >= 9
    chosen = search(db, SearchRequest(**req), settings)
    assert chosen.exact and chosen.plan == "by_concept"
    assert [h.image_id for h in chosen.hits] == [h.image_id for h in truth.hits]


def test_an_index_that_under_fills_falls_back_to_exact(vectors_db, settings):
    """A rare concept forced through the index with pgvector allowed to visit almost nothing
    beyond its first ef_search candidates: the scan comes back short of the page, and the search
    reruns the same statement exactly rather than return fewer rows than exist."""
    db, ids, _ = vectors_db
    starved = settings.model_copy(update={"hnsw_max_scan_tuples": 1})
    req = dict(model="synthetic-64", image_ids=[ids[0]], concepts=["rare"], limit=20)
    result = search(db, SearchRequest(**req, exact=False), starved)
    truth = search(db, SearchRequest(**req, exact=True), settings)
    assert result.exact and result.plan == "scan"
    assert [h.image_id for h in result.hits] == [h.image_id for h in truth.hits] and len(truth.hits) == 20


def test_a_search_takes_at_most_three_round_trips(vectors_db, settings):
    """Counted on the wire (libpq trace): a Sync or a simple Query message is one round trip."""
    shared, ids, _ = vectors_db
    db = Database(shared.url, embedded=False, pool_max_size=1)  # one connection: the one traced
    cases = [dict(image_ids=[ids[0]]), dict(image_ids=[ids[0]], datasets=["small"]),
             dict(image_ids=[ids[0]], concepts=["common"]), dict(query="#rare")]
    trips = []
    for case in cases:
        with tempfile.TemporaryFile("w+") as trace:
            with db.pooled() as conn:
                conn.pgconn.trace(trace.fileno())
                conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            search(db, SearchRequest(model="synthetic-64", **case), settings)
            with db.pooled() as conn:
                conn.pgconn.untrace()  # flushes the trace
            trace.seek(0)
            sent = ["\t".join(line.split("\t")[2:])[:60] for line in trace.read().splitlines() if line.split("\t")[0] == "F"]
        trips.append(sum(m.startswith(("Sync", "Query")) for m in sent))
    with db.pooled() as conn:  # the context statement ran prepared, planned once (generic plan)
        plans = conn.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                             " WHERE statement LIKE '%%search_context(%%'").fetchall()
        mode = conn.execute("SHOW plan_cache_mode").fetchone()[0]
    # (one prepared statement per set of parameter types: NULL and array parameters differ)
    assert sum(g for g, _ in plans) == len(cases) and sum(c for _, c in plans) == 0, plans
    assert mode == "auto"  # forced for that statement only
    db.close()
    # a first search of each kind: the context statement, then the ranking (a repeat: one,
    # test_a_repeated_search_by_a_stored_item_is_one_round_trip_and_a_stale_guess_is_not_used)
    assert trips[:3] == [2, 2, 2] and 1 <= trips[3] <= 3, trips


def test_a_failed_context_statement_leaves_the_connection_planning_as_before(vectors_db):
    """The context statement runs with plan_cache_mode forced for it alone (db.prepared.run).
    When it fails (here: a division by zero; in life a timeout or a cancel) the setting must
    still not outlive it (the Query is one implicit transaction), or the connection would go
    back to the pool planning every statement generically; and the statement it prepared on the
    way stays known, so the next run neither prepares it twice nor misses it."""
    from visearch.db.prepared import prepared, run

    shared, _, _ = vectors_db
    db = Database(shared.url, embedded=False, pool_max_size=1)
    statement = prepared("SELECT 1 / %(x)s::int AS y, %(x)s::int AS x")
    try:
        with pytest.raises(psycopg.errors.DivisionByZero):
            with db.pooled() as conn:
                conn.autocommit = True
                run(conn, [(statement, {"x": 0})])
        with db.pooled() as conn:  # the same connection (a pool of one)
            assert conn.execute("SHOW plan_cache_mode").fetchone()[0] == "auto"
            conn.rollback()
            conn.autocommit = True
            assert run(conn, [(statement, {"x": 4})]) == [[(0, 4)]]  # a name used twice is one parameter
            # inside the caller's transaction: the setting ends with the statement there too
            conn.autocommit = False
            assert run(conn, [(statement, {"x": 2})]) == [[(0, 2)]]
            assert conn.execute("SHOW plan_cache_mode").fetchone()[0] == "auto"
            # prepared once, planned once: three runs (the failed one too) on one generic plan
            assert conn.execute("SELECT count(*), sum(generic_plans), sum(custom_plans) FROM pg_prepared_statements"
                                " WHERE statement LIKE %s", ("%1 / $1::int%",)).fetchone() == (1, 3, 0)
            conn.rollback()
    finally:
        db.close()


def test_the_ranking_statement_runs_with_a_generic_plan_that_uses_the_filter_class_index(
        vectors_db, small_exact, monkeypatch):
    """The ranking statement runs prepared with a generic plan from its first run, everything but
    the query item written in (statements.prepared_rank): it is never planned per search. That
    plan must still be the filter class's plan (the model's partial HNSW index for no filter, the
    concept's own index for a selective one) and give the answer a freshly planned one gives.
    (With the model id or the concept bound instead of written in, the generic plan cannot use
    those indexes and this test fails.)"""
    from visearch.search import service

    shared, ids, _ = vectors_db
    for case, index in ((dict(), "Index Scan using image_embeddings_hnsw_model_"),
                        (dict(concepts=["rare"]), "image_labels_concept")):
        monkeypatch.setattr(service, "_RECENT", service._Recent())
        db = Database(shared.url, embedded=False, pool_max_size=1)  # one connection: its statements
        try:
            for i in range(7):
                req = SearchRequest(model="synthetic-64", image_ids=[ids[100 + i]], limit=10, **case)
                settled = search(db, req, small_exact)
            with db.pooled() as conn:
                (name, generic, custom), = conn.execute(
                    "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE '%%AS WITH ranked%%'").fetchall()
                with conn.transaction():  # the generic plan (auto would plan the first five anew)
                    conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                    plan = "\n".join(r[0] for r in conn.execute(
                        f"EXPLAIN EXECUTE {name}('{{{int(ids[100])}}}')"))
        finally:
            db.close()
        assert (custom, generic) == (0, 7), case
        assert index in plan and "Seq Scan on image_embeddings" not in plan, plan
        monkeypatch.setattr(service, "_RECENT", service._Recent())
        fresh_db = Database(shared.url, embedded=False, pool_max_size=1)
        try:
            with fresh_db.pooled() as conn, conn.transaction():  # planned for this query: no parameters
                shape = settled.shape
                for setting, value in [] if shape.exact else hnsw_settings(shape.ef_search, small_exact.hnsw_max_scan_tuples):
                    conn.execute(f"SET LOCAL {setting} = {value}")
                fresh = conn.execute(render(conn, shape.rank(), {**shape.params, "limit": 10})).fetchall()
        finally:
            fresh_db.close()
        assert [(h.image_id, h.score) for h in settled.hits] == [(r[0], r[1]) for r in fresh]
        assert settled.plan == ("hnsw" if not case else "by_concept") and len(fresh) == 10


def _traced_trips(db, req, settings):
    """(result, round trips) of one search on ``db``'s one pooled connection."""
    with tempfile.TemporaryFile("w+") as trace:
        with db.pooled() as conn:
            conn.pgconn.trace(trace.fileno())
            conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        result = search(db, req, settings)
        with db.pooled() as conn:
            conn.pgconn.untrace()
        trace.seek(0)
        sent = ["\t".join(line.split("\t")[2:]) for line in trace.read().splitlines() if line.split("\t")[0] == "F"]
    return result, sum(m.startswith(("Sync", "Query")) for m in sent)


def test_a_repeated_search_by_a_stored_item_is_one_round_trip_and_a_stale_guess_is_not_used(
        vectors_db, settings, monkeypatch):
    """The second search of a kind sends its ranking statement with the context statement; its
    hits equal those of a search that guessed nothing. When the database changed in between (a
    dataset's search disabled), the guess is dropped and the right statement runs."""
    from visearch.search import service

    shared, ids, _ = vectors_db
    db = Database(shared.url, embedded=False, pool_max_size=1)
    cases = [dict(), dict(concepts=["common"]), dict(concepts=["rare"]), dict(datasets=["small"])]
    try:
        for case in cases:
            first, trips_first = _traced_trips(db, SearchRequest(model="synthetic-64", image_ids=[ids[3]], limit=7, **case), settings)
            req = SearchRequest(model="synthetic-64", image_ids=[ids[4]], limit=7, **case)
            second, trips_second = _traced_trips(db, req, settings)
            monkeypatch.setattr(service, "_RECENT", service._Recent())  # nothing to guess from
            fresh, trips_fresh = _traced_trips(db, req, settings)
            assert (trips_first, trips_second, trips_fresh) == (2, 1, 2), case
            assert [(h.image_id, h.score) for h in second.hits] == [(h.image_id, h.score) for h in fresh.hits]
            assert second.plan == fresh.plan and len(second.hits) == 7
        # the guess of a search over every dataset, then 'small' disabled: the context differs
        req = SearchRequest(model="synthetic-64", image_ids=[ids[N_BIG + 1]], limit=60)
        before, _ = _traced_trips(db, req, settings)
        assert before.hits[0].image_id == ids[N_BIG + 1]  # the query image itself, in 'small'
        small = set(ids[N_BIG:])
        with shared.transaction() as conn:
            conn.execute("UPDATE datasets SET search_enabled = false WHERE name = 'small'")
        try:
            after, trips = _traced_trips(db, req, settings)
        finally:
            with shared.transaction() as conn:
                conn.execute("UPDATE datasets SET search_enabled = true WHERE name = 'small'")
        assert trips == 2 and len(after.hits) == 60 and not small & {h.image_id for h in after.hits}
    finally:
        db.close()


def test_show_sql_prints_the_statement_that_ran_runnable_as_is(vectors_db, settings):
    db, ids, _ = vectors_db
    for kw in (dict(image_ids=[ids[0]], concepts=["common"]), dict(image_ids=[ids[0]], datasets=["small"]),
               dict(query="#rare", exclude_concepts=["common"])):
        result = search(db, SearchRequest(model="synthetic-64", limit=10, **kw), settings, show_sql=True)
        with db.connect(autocommit=True) as conn:
            rows = last_rows(conn, result.sql)  # several statements, as psql runs them
        assert [r[0] for r in rows] == [h.image_id for h in result.hits] and len(rows) == 10
        assert ("SET LOCAL hnsw.iterative_scan" in result.sql) == (result.plan == "hnsw")


#: ef_search at an index of 1,000,000 vectors, unfiltered / filtered: what bench_search.py measured
#: recall@10 >= 0.98 with at 1M x 512-d (visearch.search.service.hnsw_ef_search)
EF_AT_1M = {False: 200, True: 800}


def test_hnsw_ef_search_rises_with_the_index_size(vectors_db, settings):
    """The ef_search of an HNSW ranking follows the size N of the model's index (its
    pg_class.reltuples, which the context statement reads): the floor Settings.hnsw_ef_search
    on this 5,000-vector index, EF_AT_1M once the catalog says 1,000,000 (the count a VACUUM or
    ANALYZE of a 1M-vector table leaves there), more with a filter. The value is read where the
    search sets it, on the wire, and equals what --show-sql prints; that statement, run as
    printed, gives the search's answer: the exact top 10."""
    from visearch.search.service import hnsw_ef_search

    shared, ids, _ = vectors_db
    db = Database(shared.url, embedded=False, pool_max_size=1)  # one connection: the one traced
    index = "image_embeddings_hnsw_model_1"

    def ef_searches(req, settings):
        """The search's result and the ef_search values it set on the wire, in order."""
        with tempfile.TemporaryFile("w+") as trace:
            with db.pooled() as conn:
                conn.pgconn.trace(trace.fileno())
                conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            result = search(db, req, settings, show_sql=True)
            with db.pooled() as conn:
                conn.pgconn.untrace()
            trace.seek(0)
            sent = [int(v) for v in re.findall(r"set_config\('hnsw\.ef_search', '(\d+)', true\)", trace.read())]
        printed = int(re.search(r"SET LOCAL hnsw\.ef_search = (\d+);", result.sql).group(1))
        assert sent and sent[-1] == printed == result.shape.ef_search, (sent, printed)
        return result, printed

    def req(**kw):
        return SearchRequest(model="synthetic-64", image_ids=[ids[5]], limit=10, **kw)

    # (#common's 2,500 images: broad under an exact cap of 1,000, so through the index)
    broad = settings.model_copy(update={"exact_search_max_candidates": 1000})
    try:
        small, ef = ef_searches(req(), broad)
        assert small.plan == "hnsw" and ef == settings.hnsw_ef_search
        with shared.connect(autocommit=True) as conn:
            size = conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (index,)).fetchone()[0]
            conn.execute("UPDATE pg_class SET reltuples = 1e6 WHERE oid = %s::regclass", (index,))
        try:
            big = [ef_searches(req(**kw), broad) for kw in (dict(), dict(concepts=["common"]))]
        finally:
            with shared.connect(autocommit=True) as conn:
                conn.execute("UPDATE pg_class SET reltuples = %s WHERE oid = %s::regclass", (size, index))
    finally:
        db.close()
    for (result, ef), filtered in zip(big, (False, True)):
        assert result.plan == "hnsw" and not result.exact, result.plan
        assert ef == EF_AT_1M[filtered] == hnsw_ef_search(settings, 10, 1e6, filtered=filtered)
        with shared.connect(autocommit=True) as conn:
            rows = last_rows(conn, result.sql)
        exact = search(shared, req(exact=True, concepts=["common"] if filtered else []), settings)
        assert [r[0] for r in rows] == [h.image_id for h in result.hits] == [h.image_id for h in exact.hits]
    # an operator's floor holds at every size; ef_search never drops below the rows asked for
    # and never exceeds pgvector's maximum, 1000
    high = settings.model_copy(update={"hnsw_ef_search": 900})
    assert hnsw_ef_search(high, 10, 5000) == 900 and hnsw_ef_search(high, 10, 1e6) == 1000
    assert hnsw_ef_search(settings, 300, 5000) == 300 and hnsw_ef_search(settings, 10, None) == settings.hnsw_ef_search


def test_stored_id_search_can_leave_the_query_items_out(vectors_db, settings):
    db, ids, _ = vectors_db
    kept = search(db, SearchRequest(model="synthetic-64", image_ids=[ids[0], ids[1]], limit=5), settings)
    left = search(db, SearchRequest(model="synthetic-64", image_ids=[ids[0], ids[1]], limit=5,
                                    exclude_query_items=True), settings)
    assert {ids[0], ids[1]} & {h.image_id for h in kept.hits}
    assert not {ids[0], ids[1]} & {h.image_id for h in left.hits} and len(left.hits) == 5


def test_sql_examples_use_the_index_per_item(vectors_db):
    """sql/examples written for model 1, 1280-d, run on this 64-d model 1: near-duplicates finds
    the planted pair through one HNSW index scan per image (not every pair: N²), and neither
    example scans every vector (here nothing has a #person box, so that filter drives)."""
    from visearch.resources import sql_dir

    db, ids, _ = vectors_db
    near = (sql_dir() / "examples" / "near_duplicate_images.sql").read_text().replace("vector(1280)", "vector(64)")
    similar = (sql_dir() / "examples" / "similar_images_with_a_concept.sql").read_text().replace("vector(1280)", "vector(64)")
    with db.connect(autocommit=True) as conn:
        plans = []
        for text in (near, similar):
            after = text[text.rindex("SET LOCAL"):]
            body = after[after.index(";") + 1: after.rindex("COMMIT")].strip().rstrip(";")
            plans.append("\n".join(r[0] for r in conn.execute("EXPLAIN " + body)))
            assert not re.search(r"Seq Scan on image_embeddings e\b", plans[-1]), plans[-1]  # the ranked side
        # near duplicates: for each image (outer scan), one HNSW index scan (inner loop)
        assert "Nested Loop" in plans[0] and "Index Scan using image_embeddings_hnsw_model_1" in plans[0], plans[0]
        rows = last_rows(conn, near)
    assert [(r[0], r[1]) for r in rows] == [(ids[10], ids[11])]


# Each HTTP search field and the `visearch search` option with the same name and meaning.
_CLI_OF_API = {
    "mode": "--mode", "image_ids": "--image-id", "annotation_id": "--annotation-id", "crop_xywh": "--crop",
    "concepts": "--concept", "exclude_concepts": "--exclude-concept", "datasets": "--dataset",
    "metadata": "--metadata", "created_from": "--created-from", "created_to": "--created-to",
    "min_score": "--min-score", "max_score": "--max-score", "limit": "--limit", "model": "--model",
    "exact": "--exact", "exclude_query_items": "--exclude-query-items",
    "diversity": "--mmr", "expand": "--expand", "positive_ids": "--positive", "negative_ids": "--negative",
}
# query is the CLI's argument; depth and histogram_bins shape the HTTP API's kept collection
_API_ONLY = {"query", "depth", "histogram_bins"}


def test_every_api_search_option_exists_on_the_command_line():
    from visearch.cli import search as search_command
    from visearch.http.schemas import SearchBody

    options = {opt for p in search_command.params for opt in getattr(p, "opts", [])}
    fields = set(SearchBody.__struct_fields__)
    assert fields - _API_ONLY <= set(_CLI_OF_API), fields - _API_ONLY - set(_CLI_OF_API)
    missing = {f: o for f, o in _CLI_OF_API.items() if f in fields and o not in options}
    assert not missing


def test_cli_search_with_every_filter_prints_sql_that_runs(vectors_db, settings):
    """`visearch search ... --show-sql`: the printed statement, run as-is, returns the printed hits;
    --model works after the subcommand; the filters have the API's meaning."""
    import json

    from click.testing import CliRunner

    from visearch.cli import cli

    db, ids, _ = vectors_db
    args = ["--database-url", db.url, "search", "--image-id", str(ids[0]), "--model", "synthetic-64",
            "--exclude-concept", "#common", "--metadata", "{}", "--created-from", "2000-01-01",
            "--dataset", "big", "-k", "5", "--exclude-query-items", "--show-sql", "--json"]
    out = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    cut = out.output.index("\n{\n")  # the SQL, then the JSON result
    statement, as_json = out.output[:cut], out.output[cut:]

    hits = [h["image_id"] for h in json.loads(as_json)["hits"]]
    with db.connect(autocommit=True) as conn:
        rows = last_rows(conn, statement)
    assert [r[0] for r in rows] == hits and len(hits) == 5 and ids[0] not in hits
    with db.connect() as conn:
        common = {r[0] for r in conn.execute(
            "SELECT image_id FROM image_labels l JOIN concepts k ON k.id = l.concept_id WHERE k.tag = 'common'")}
    assert not set(hits) & common
    same = search(db, SearchRequest(image_ids=[ids[0]], model="synthetic-64", exclude_concepts=["common"],
                                    datasets=["big"], limit=5, exclude_query_items=True), settings)
    assert [h.image_id for h in same.hits] == hits
    bad = CliRunner().invoke(cli, ["--database-url", db.url, "search", "--image-id", "1", "--model", "nope"])
    assert bad.exit_code != 0 and "unknown model 'nope'" in bad.output and "synthetic-64" in bad.output


def test_the_search_layer_imports_neither_the_worker_nor_torch():
    import subprocess
    import sys

    code = ("import sys, visearch.search.service; "
            "bad = sorted(m for m in sys.modules if m.startswith(('visearch.worker', 'torch'))); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _nested_plans(conn: psycopg.Connection) -> list[str]:
    """The plans of the statements the functions called on ``conn`` run from now on
    (auto_explain, with nested statements, sent to the client as notices), sequential scans
    priced out."""
    plans: list[str] = []
    conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_nested_statements = on", "SET auto_explain.log_level = notice",
                    "SET client_min_messages = notice", "SET enable_seqscan = off"):
        conn.execute(setting)
    return plans


def test_the_context_statement_counts_named_datasets_from_their_index(vectors_db, settings):
    """The named datasets' size (counted up to the cap by search_context(),
    sql/schema/0015_search_context.sql) reads an index, images_dataset_external_id for images,
    never a scan of images or annotations: the same cost for a dataset of 50 images as of 5
    million. auto_explain shows the function's own statements."""
    from visearch.search.service import CONTEXT_CALL, context_params

    shared, _, _ = vectors_db
    with shared.connect() as conn:
        images = conn.execute("SELECT count(*) FROM images i JOIN datasets d ON d.id = i.dataset_id"
                              " WHERE d.name = 'small'").fetchone()[0]
    for kind in ("image", "object"):
        with shared.connect(autocommit=True) as conn:
            plans = _nested_plans(conn)
            params = context_params(
                model_name="synthetic-64", fallback_model=settings.model, needs_text=False, kind=kind,
                dataset_names=["small"], concept_terms=[], exclude_terms=[],
                cap=settings.exact_search_max_candidates, rows=10)
            size = conn.execute(CONTEXT_CALL, params).fetchone()[18]
        plan = "\n".join(p for p in plans if "FROM images i" in p)  # the count's own plan
        assert size == (images if kind == "image" else 0), size
        assert plan and not re.search(r"Seq Scan on (images|annotations)\b", plan), plan
        # the index searched for the datasets, not read whole with the datasets as a filter (the
        # module's datasets hold no boxes: the object count is planned from annotations' index)
        assert kind == "object" or re.search(r"\bimages_dataset_external_id\b.*\n\s+Index Cond: \(dataset_id = ANY",
                                             plan), plan


def test_the_concept_driver_size_counts_from_the_concept_indexes(vectors_db, settings):
    """concept_driver_size() (sql/schema/0011_concept_size.sql, called by search_context())
    counts each required concept's image labels from image_labels_concept: auto_explain
    shows the function's own statements, with sequential scans priced out."""
    from visearch.search.service import CONTEXT_CALL, context_params

    shared, _, _ = vectors_db
    with shared.connect(autocommit=True) as conn:
        plans = _nested_plans(conn)
        params = context_params(
            model_name="synthetic-64", fallback_model=settings.model, needs_text=False, kind="image",
            dataset_names=None, concept_terms=["rare"], exclude_terms=[],
            cap=settings.exact_search_max_candidates, rows=10)
        size = conn.execute(CONTEXT_CALL, params).fetchone()[17]
        text = "\n".join(plans)
    assert size == RARE
    # the fixture's concepts are image labels only: with an empty annotations table the planner
    # may read it through any index, so only the labels' count can show its own index here
    assert re.search(r"\bimage_labels_concept\b.*\n\s+Index Cond: \(concept_id = ", text), text
    assert not re.search(r"Seq Scan on (annotations|image_labels)\b", text), text


def test_the_context_looks_up_names_probes_and_the_stored_vector_through_their_indexes(vectors_db, settings):
    """Every search runs search_context(): its lookups of the model by name, of the concepts by
    tag, its coverage probes of the queue and its probe of the query item's stored vector must
    each search an index (an Index Cond), never read the table (concepts, queue and vectors grow
    with the data). auto_explain shows the function's own statements; sequential scans, hash
    and merge joins are priced out, so the plans show what the statements' shapes allow."""
    from visearch.search.service import CONTEXT_CALL, context_params

    shared, ids, _ = vectors_db
    with shared.connect(autocommit=True) as conn, conn.transaction(force_rollback=True):
        # a queue as a new model's backfill leaves it: 5,000 items of another model, 50 of this
        # one (some given up on), statistics up to date. (Over an empty queue, or one model's
        # alone, the planner may pick any index, the model's or not)
        conn.execute("INSERT INTO embedding_models (name, dim, embeds_text, is_active) VALUES ('other-64', 64, false, false)")
        conn.execute("INSERT INTO embedding_queue (model_id, item_kind, item_id, dataset_id, failed)"
                     " SELECT m.id, 'image', 10000000 * d.id + g, d.id, g % 10 = 0"
                     " FROM embedding_models m, datasets d, generate_series(1, 2500) g"
                     " WHERE m.name = 'other-64' OR (m.name = 'synthetic-64' AND g <= 25)")
        conn.execute("ANALYZE embedding_queue")
        plans = _nested_plans(conn)
        conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        params = context_params(
            model_name="synthetic-64", fallback_model=settings.model, needs_text=False, kind="image",
            dataset_names=None, concept_terms=["rare"], exclude_terms=["common"],
            cap=settings.exact_search_max_candidates, rows=10, query_image_ids=[int(ids[0])])
        row = conn.execute(CONTEXT_CALL, params).fetchone()
    assert row[1] == "synthetic-64" and len(row[9]) == 1 and len(row[11]) == 1 and row[20] == 1, row
    assert row[13] and row[14], row  # has_queued, has_failed: the probes found the backfill
    text = "\n".join(plans)
    assert not re.search(r"Seq Scan on (concepts|embedding_models|embedding_queue|image_embeddings)\b", text), text
    for table, cond in (("embedding_models", r"\(name = "), ("concepts", r"\(tag = "),
                        ("image_embeddings", r"\(.*image_id = ANY")):  # by the item (and the model)
        assert re.search(rf"Scan using \w+ on {table}\b.*\n\s+Index Cond: {cond}", text), (table, text)
    # the two coverage probes, each an index probe of the queue keyed by the model
    probes = [p for p in plans if "FROM embedding_queue q" in p and "EXISTS" in p]
    assert len(probes) == 2, probes
    for probe in probes:
        assert re.search(r"Scan using \w+ on embedding_queue q.*\n\s+Index Cond: .*model_id = ", probe), probe


def test_the_cached_ranking_text_is_each_kind_of_search_s_own():
    """statements.prepared_rank caches the ranking statement's text per kind of search: every
    field its text depends on must tell two kinds apart, or one search would run another's
    filters. Each shape below differs from the first in one such field; asked in turn (twice,
    the second time from the cache), each must get the text composed for it afresh."""
    from datetime import datetime, timezone

    from psycopg.types.json import Jsonb

    from visearch.db.prepared import prepared
    from visearch.search.statements import Shape, prepared_rank, with_literals

    base = dict(model_id=3, dataset_ids=None, concept_ids=[5], exclude_concept_ids=[], metadata=None,
                created_from=None, created_to=None, min_distance=None, query_image_ids=[11],
                query_annotation_id=None, min_box_area=None)
    variants = [
        ("image", "by_concept", 64, {}, {}), ("object", "by_concept", 64, {"query_image_ids": None,
                                                                          "query_annotation_id": 7}, {}),
        ("image", "hnsw", 64, {}, {}), ("image", "hnsw", 128, {}, {}),
        ("image", "by_concept", 64, {"concept_ids": [6]}, {}),
        ("image", "by_concept", 64, {"concept_ids": [5, 6]}, {}),
        ("image", "by_concept", 64, {"model_id": 4}, {}),
        ("image", "by_concept", 64, {"dataset_ids": [1, 2]}, {}),
        ("image", "by_concept", 64, {"dataset_ids": [1]}, {}),
        ("image", "by_concept", 64, {"exclude_concept_ids": [8]}, {}),
        ("image", "by_concept", 64, {"metadata": Jsonb({"a": 1})}, {}),
        ("image", "by_concept", 64, {"metadata": Jsonb({"a": True})}, {}),
        ("image", "by_concept", 64, {"created_from": datetime(2024, 1, 1, tzinfo=timezone.utc)}, {}),
        ("image", "by_concept", 64, {"min_distance": 0.25}, {}),
        ("image", "by_concept", 64, {}, {"exclude_query_items": True}),
        ("image", "by_concept", 64, {"query_image_ids": None}, {"query_from": "param"}),
    ]
    cases = []
    for kind, driver, dim, changes, fields in variants:
        shape = Shape(kind, driver, dim, {**base, **changes}, **{"query_from": "stored_image", **fields})
        if kind == "object":
            shape.query_from = "stored_box"
        if shape.query_from == "param":
            shape.params["query"] = [0.0] * dim
        for exact in (shape.exact, True):
            for limit in (10, 20):
                cases.append((shape, exact, limit))
    fresh = [prepared.__wrapped__(with_literals(None, s.rank(exact=e), {**s.params, "limit": n})[0])
             for s, e, n in cases]
    # every variant changes the text, but the dimension of an exact ranking (no ::vector(dim)):
    # the 64-d and 128-d HNSW shapes ranked exactly, at two limits, share theirs
    assert len(set(fresh)) == len({(id(s), e, n) for s, e, n in cases}) - 2
    for _ in range(2):
        assert [prepared_rank(s, exact=e, limit=n) for s, e, n in cases] == fresh
