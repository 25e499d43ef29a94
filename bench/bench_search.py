"""Search benchmark: visearch's search() next to raw pgvector SQL and FAISS, on the same data, in
one run, so the ratios hold on a loaded machine.

Data: ``--size`` synthetic clustered unit vectors of ``--dim`` dimensions (100 cluster centres,
Gaussian spread, renormalised: neighbourhoods as real embeddings have them, the case where HNSW
has tail failures), stored as images of two datasets (``bench-main`` 99%, ``bench-small`` 1%)
with image labels ``#bench_10`` / ``#bench_1`` / ``#bench_01`` on 10% / 1% / 0.1% of them, under
a model ``bench-synthetic-<dim>``. Built once per size and dim in the embedded database under
``--data-dir`` (default ``.visearch/bench``; the HNSW build takes minutes, with
``maintenance_work_mem`` raised by ``--maintenance-work-mem`` so the graph fits in memory); later
runs with the same size and dim reuse it, so shapes can be iterated on quickly. The index is
built with ``visearch.db.vectors.hnsw_build_params(dim)``, as visearch builds it.

For each filter class (none, 10% / 1% / 0.1% concept, 1% dataset) and ``--queries`` stored
image queries, k = 10:

* ``search()``: the whole call (resolution, query vector, ranking) as the CLI and API run it;
* raw pgvector SQL, each form a person would write by hand: ``ORDER BY embedding::vector(dim) <=>
  q`` with the filter as ``EXISTS`` and iterative scan on (PostgreSQL's planner still picks the
  filter's own index and an exact sort when it estimates that cheaper), and the exact join
  driven by the filter (or the full scan when unfiltered); pgvector's settings already set in
  an open transaction and the query vector given: only the statement is timed;
* the same two forms written to give the same answer as ``search()`` from the same input: the
  stored image's id (the statement reads its vector) in, each hit's score, dataset, file name,
  size, URI and external id out ("same answer"): what a person would send in one statement;

The forms run one query at a time in turn, in an order drawn at random for each query (seeded),
so load on the machine hits them alike and no form always runs after the same other one, after
one untimed pass over the queries: otherwise whichever form runs first for a query pays for
reading its part of the index and heap into memory (measured: ~25 ms at 100k x 1280-d on the
shared machine), and search() alone reads the query's stored vector. (A fixed cyclic order,
which this bench used until then, put search() after the same-answer exact join every time;
the same search() call measured 0.14-0.28 ms slower there, at a 0.1% filter where a search
takes 1.1-1.4 ms, than right after another search: the cost of a cold path, on a 2-core
machine.)
* FAISS ``IndexHNSWFlat`` (M = 16, efSearch = 100, inner product) in process, unfiltered.

Each row: p50/p95 latency, recall@10 against the exact answer (mean, worst query, share of
queries below 0.5) and rows returned. Ratio = search() p50 / the best raw form's p50 among
those with recall >= 0.98. search()'s row notes the ef_search it used (the rule:
``visearch.search.service.hnsw_ef_search``).

``--ef-search 100,200,400,800`` adds one raw HNSW iterative row per value (vector given) to the
same turns: the index's recall/latency curve, which chose that rule. ``--filters`` runs only
the named filter classes. ``--build M,EF_CONSTRUCTION`` loads the same vectors under another
model with an index of that build; the images and labels of an earlier run are kept, so two
builds answer the same queries over the same rows.

    python bench/bench_search.py --size 100000 --dim 1280 [--queries 200]
    python bench/bench_search.py --size 1000000 --dim 512 --queries 100 --no-faiss \
        --maintenance-work-mem 4GB --build 24,128 --ef-search 100,200,400,800 --filters "none,10% concept"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

from visearch.config import Settings
from visearch.db.database import open_database
from visearch.db.models import register_model
from visearch.db.vectors import ensure_hnsw_index, write_vectors
from visearch.search import SearchRequest, search

ROOT = Path(__file__).resolve().parents[1]
FILTERS = [("none", {}), ("10% concept", {"concepts": ["bench_10"]}), ("1% concept", {"concepts": ["bench_1"]}),
           ("0.1% concept", {"concepts": ["bench_01"]}), ("1% dataset", {"datasets": ["bench-small"]})]
SHARES = {"bench_10": 0.10, "bench_1": 0.01, "bench_01": 0.001}


def clustered_unit_vectors(n: int, dim: int, seed: int = 0, clusters: int = 100, spread: float = 0.6) -> np.ndarray:
    """(n, dim) float32 rows of unit norm around `clusters` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        x = centres[rng.integers(0, clusters, m)] + spread * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def prepare(db, n: int, dim: int, maintenance_work_mem: str = "2GB", build: dict | None = None):
    """Load the data set once; return (model name, image ids, vectors, label sets, small ids).
    ``build``: other HNSW build parameters than visearch's (``{"m": .., "ef_construction": ..}``);
    the data are kept apart under another model name."""
    model = f"bench-synthetic-{dim}" + (f"-m{build['m']}-ef{build['ef_construction']}" if build else "")
    vecs = clustered_unit_vectors(n, dim)
    rng = np.random.default_rng(1)
    with db.connect() as conn:
        have = conn.execute(
            "SELECT count(*) FROM image_embeddings e JOIN embedding_models m ON m.id = e.model_id WHERE m.name = %s",
            (model,)).fetchone()[0]
    with db.connect() as conn:  # the images and labels of an earlier run (another build's model)
        kept = [r[0] for r in conn.execute(
            "SELECT i.id FROM images i JOIN datasets d ON d.id = i.dataset_id WHERE d.name LIKE 'bench-%%'"
            " ORDER BY i.id")]
    if have != n and len(kept) == n:
        t0 = time.perf_counter()
        with db.transaction() as conn:
            conn.execute("DELETE FROM embedding_models WHERE name = %s", (model,))
            row = register_model(conn, model, dim, False, active=False)
            for start in range(0, n, 20_000):
                write_vectors(conn, model_id=row.id, item_kind="image", item_ids=kept[start:start + 20_000],
                              vectors=vecs[start:start + 20_000])
        print(f"loaded {n} x {dim} vectors for {model} (images and labels kept) in {time.perf_counter() - t0:.0f} s")
    elif have != n:
        t0 = time.perf_counter()
        with db.transaction() as conn:
            conn.execute("DELETE FROM embedding_models WHERE name = %s", (model,))
            conn.execute("DELETE FROM datasets WHERE name LIKE 'bench-%%'")
            row = register_model(conn, model, dim, False, active=False)
            main = conn.execute("INSERT INTO datasets (name) VALUES ('bench-main') RETURNING id").fetchone()[0]
            small = conn.execute("INSERT INTO datasets (name) VALUES ('bench-small') RETURNING id").fetchone()[0]
            in_small = rng.random(n) < 0.01
            ids = [r[0] for r in conn.execute(
                "INSERT INTO images (dataset_id, sha256, width, height, format)"
                " SELECT CASE WHEN s THEN %s ELSE %s END, sha256(('bench' || g)::bytea), 32, 32, 'JPEG'"
                " FROM unnest(%s::boolean[]) WITH ORDINALITY AS t (s, g) ORDER BY g RETURNING id",
                (small, main, in_small.tolist())).fetchall()]
            for tag, share in SHARES.items():
                concept = conn.execute("INSERT INTO concepts (name) VALUES (%s) ON CONFLICT (name) DO UPDATE"
                                       " SET name = excluded.name RETURNING id", (tag,)).fetchone()[0]
                conn.execute("DELETE FROM image_labels WHERE concept_id = %s", (concept,))
                chosen = np.asarray(ids)[rng.random(n) < share]
                conn.execute("INSERT INTO image_labels (image_id, concept_id, source) SELECT unnest(%s::bigint[]), %s, 'bench'",
                             (chosen.tolist(), concept))
            for start in range(0, n, 20_000):
                write_vectors(conn, model_id=row.id, item_kind="image", item_ids=ids[start:start + 20_000],
                              vectors=vecs[start:start + 20_000])
        print(f"loaded {n} x {dim} in {time.perf_counter() - t0:.0f} s")
    if have != n:
        t0 = time.perf_counter()
        with db.transaction() as conn:
            # the graph must fit in memory or the build spills and slows several times over
            conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,))
            ensure_hnsw_index(conn, "image", row.id, params=build)
        print(f"HNSW index built in {time.perf_counter() - t0:.0f} s")
        with db.connect(autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE images, image_labels, image_embeddings")
    with db.connect() as conn:
        model_id = conn.execute("SELECT id FROM embedding_models WHERE name = %s", (model,)).fetchone()[0]
        ids = np.array([r[0] for r in conn.execute(
            "SELECT image_id FROM image_embeddings WHERE model_id = %s ORDER BY image_id", (model_id,))])
        labels = {tag: set(r[0] for r in conn.execute(
            "SELECT l.image_id FROM image_labels l JOIN concepts k ON k.id = l.concept_id WHERE k.tag = %s", (tag,)))
            for tag in SHARES}
        small = set(r[0] for r in conn.execute(
            "SELECT i.id FROM images i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = 'bench-small'"))
        ids_of = dict(conn.execute("SELECT tag, id FROM concepts WHERE tag LIKE 'bench%%'").fetchall())
        ids_of |= dict(conn.execute("SELECT name, id FROM datasets WHERE name LIKE 'bench-%%'").fetchall())
    return model, model_id, ids, vecs, labels, small, ids_of


def pct(values, q):
    return float(np.percentile(values, q))


def recall_stats(answers, truth):
    r = [len(set(a) & set(t)) / max(1, len(t)) for a, t in zip(answers, truth)]
    return float(np.mean(r)), float(np.min(r)), float(np.mean(np.asarray(r) < 0.5))


def row(case, form, lat, answers, truth, extra=""):
    mean, worst, below = recall_stats(answers, truth)
    return {"filter": case, "form": form, "p50 ms": pct(lat, 50), "p95 ms": pct(lat, 95),
            "recall@10": mean, "worst": worst, "share <0.5": below,
            "rows": float(np.mean([len(a) for a in answers])), "note": extra}


def raw_sql(kind: str, model_id: int, dim: int, spec: dict, ids_of: dict, *, same_answer: bool = False) -> str:
    """The hand-written pgvector statement for a filter class (ids written in, as a person would).

    ``same_answer``: the same statement given what ``search()`` is given and returning what it
    returns: the stored image's id instead of its vector (read by the statement itself) and each
    hit's score, dataset, file name, size, URI and external id (joined by id after the top k)."""
    concept = ids_of.get(spec.get("concepts", [None])[0])
    dataset = ids_of.get(spec.get("datasets", [None])[0])
    if same_answer:
        q = f"(SELECT embedding FROM image_embeddings WHERE model_id = {model_id} AND image_id = %(id)s)"
    else:
        q = "%(q)s"
    if kind == "hnsw":
        where = ""
        if concept:
            where = (" AND EXISTS (SELECT 1 FROM image_labels l WHERE l.image_id = e.image_id"
                     f" AND l.concept_id = {concept})")
        if dataset:
            where = (" AND EXISTS (SELECT 1 FROM images i WHERE i.id = e.image_id AND i.dataset_id ="
                     f" {dataset})")
        distance = f"e.embedding::vector({dim}) <=> {q}::vector({dim})"
        statement = f"SELECT e.image_id, {distance} AS distance FROM image_embeddings e WHERE e.model_id = {model_id}{where}"
    elif concept:
        distance = f"e.embedding <=> {q}::vector"
        statement = ("SELECT e.image_id, {distance} AS distance FROM image_labels l JOIN image_embeddings e"
                     f" ON e.model_id = {model_id} AND e.image_id = l.image_id"
                     f" WHERE l.concept_id = {concept}").replace("{distance}", distance)
    elif dataset:
        distance = f"e.embedding <=> {q}::vector"
        statement = (f"SELECT e.image_id, {distance} AS distance FROM images i JOIN image_embeddings e"
                     f" ON e.model_id = {model_id} AND e.image_id = i.id"
                     f" WHERE i.dataset_id = {dataset}")
    else:
        distance = f"e.embedding <=> {q}::vector"
        statement = f"SELECT e.image_id, {distance} AS distance FROM image_embeddings e WHERE e.model_id = {model_id}"
    statement += f" ORDER BY {distance} LIMIT 10"
    if not same_answer:
        return statement
    return ("SELECT r.image_id, 1 - r.distance AS score, d.name, i.file_name, i.width, i.height, i.source_uri,"
            f" i.external_id FROM ({statement}) r JOIN images i ON i.id = r.image_id"
            " JOIN datasets d ON d.id = i.dataset_id ORDER BY r.distance")


class RawForm:
    """One hand-written statement on its own connection, pgvector's settings set once in an open
    transaction (as a person at psql would): only the statement is timed."""

    def __init__(self, db, statement: str, *, hnsw: bool, ef_search: int, by_id: bool = False):
        self.statement, self.conn, self.by_id = statement, db.connect(), by_id
        if hnsw:
            self.conn.execute(f"SET LOCAL hnsw.ef_search = {ef_search}")
            self.conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")

    def __call__(self, query: np.ndarray, image_id: int) -> list[int]:
        params = {"id": image_id} if self.by_id else {"q": query}
        return [r[0] for r in self.conn.execute(self.statement, params)]

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".visearch" / "bench")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--maintenance-work-mem", default="2GB", help="for the HNSW build (1M x 512-d: 4GB)")
    ap.add_argument("--build", default=None, metavar="M,EF_CONSTRUCTION",
                    help="HNSW build parameters other than visearch's (hnsw_build_params), e.g. 24,128")
    ap.add_argument("--ef-search", default=None, metavar="EF,EF,...",
                    help="also one raw HNSW iterative row per ef_search value (vector given), in the same"
                         " turns: the recall/latency curve of the index, e.g. 100,200,400,800")
    ap.add_argument("--filters", default=None, metavar="NAME,NAME,...",
                    help="only these filter classes (of: " + ", ".join(name for name, _ in FILTERS).replace("%", "%%") + ")")
    args = ap.parse_args()
    curve = [int(v) for v in args.ef_search.split(",")] if args.ef_search else []
    cases = FILTERS
    if args.filters:
        names = [v.strip() for v in args.filters.split(",")]
        unknown = set(names) - {name for name, _ in FILTERS}
        if unknown:
            ap.error(f"unknown filter classes {sorted(unknown)}; known: {[name for name, _ in FILTERS]}")
        cases = [(name, spec) for name, spec in FILTERS if name in names]
    settings = Settings(data_dir=args.data_dir, database_url=args.database_url)
    db = open_database(settings)
    build = dict(zip(("m", "ef_construction"), map(int, args.build.split(",")))) if args.build else None
    model, model_id, ids, vecs, labels, small, ids_of = prepare(db, args.size, args.dim, args.maintenance_work_mem, build)
    pos = {int(i): k for k, i in enumerate(ids)}
    rng = np.random.default_rng(0)
    queries = [int(i) for i in rng.choice(ids, size=args.queries, replace=False)]
    members = {"none": None, "10% concept": labels["bench_10"], "1% concept": labels["bench_1"],
               "0.1% concept": labels["bench_01"], "1% dataset": small}
    table, ratios, truth_none = [], [], None
    for case, spec in cases:
        allowed = members[case]
        cand = np.arange(len(ids)) if allowed is None else np.array([pos[i] for i in sorted(allowed)])
        # the exact answer, brute force in numpy: (queries, candidates) similarities at once
        sims = vecs[[pos[q] for q in queries]] @ vecs[cand].T
        top = np.argsort(-sims, axis=1)[:, :10]
        truth = [[int(ids[cand[k]]) for k in row_] for row_ in top]
        del sims
        # search() as the CLI and the API run it, and the raw forms, one query at a time in turn
        # (in a random order per query), so that load on the machine hits them alike
        exact_form = "raw SQL: exact join" if spec else "raw SQL: exact scan"
        ef = settings.hnsw_ef_search
        raw_forms = [("raw SQL: HNSW iterative", True, False, ef), (exact_form, False, False, ef),
                     ("same answer: HNSW iterative", True, True, ef), ("same answer: " + exact_form[9:], False, True, ef)]
        curve_forms = [(f"raw SQL: HNSW iterative, ef {v}", True, False, v) for v in curve]
        raw = [RawForm(db, raw_sql("hnsw" if hnsw else "exact", model_id, args.dim, spec, ids_of, same_answer=same),
                       hnsw=hnsw, ef_search=ef_, by_id=same) for _, hnsw, same, ef_ in raw_forms + curve_forms]
        plans = []

        def ours(q):
            res = search(db, SearchRequest(image_ids=[q], limit=10, model=model, **spec), settings)
            plans.append((res.plan, res.shape.ef_search))
            return [h.image_id for h in res.hits]

        runners = [ours] + [lambda q, f=f: f(vecs[pos[q]], q) for f in raw]
        lat = [[] for _ in runners]
        answers = [[] for _ in runners]
        for q in queries:  # untimed: pages the queries touch come into memory for every form alike
            for run in runners[:2] + runners[5:]:  # (the exact forms read every candidate each time anyway)
                run(q)
        plans.clear()
        turns = np.random.default_rng(2)
        for q in queries:
            for j in turns.permutation(len(runners)):
                t0 = time.perf_counter()
                found = runners[j](q)
                lat[j].append((time.perf_counter() - t0) * 1000)
                answers[j].append(found)
        for f in raw:
            f.close()
        used = sorted({plan for plan, _ in plans})  # (the ef_search of its HNSW rankings: hnsw_ef_search's rule)
        efs = sorted({ef_ for plan, ef_ in plans if plan == "hnsw"})
        ours = row(case, "search()", lat[0], answers[0], truth,
                   "plan: " + ", ".join(used) + (f"; ef_search {', '.join(map(str, efs))}" if efs else ""))
        raws = [row(case, form, lat[j + 1], answers[j + 1], truth, f"ef_search {ef_}" if hnsw else "")
                for j, (form, hnsw, _, ef_) in enumerate(raw_forms + curve_forms)]
        table += [ours, *raws]
        raws = raws[:len(raw_forms)]

        def best_of(forms):
            good = [r for r in forms if r["recall@10"] >= 0.98] or forms
            return min(good, key=lambda r: r["p50 ms"])

        best, same = best_of(raws[:2]), best_of(raws[2:])
        ratios.append({"filter": case, "search() p50": ours["p50 ms"], "search() p95": ours["p95 ms"],
                       "best raw": best["form"], "raw p50": best["p50 ms"], "ratio": ours["p50 ms"] / best["p50 ms"],
                       "overhead ms": ours["p50 ms"] - best["p50 ms"],
                       "same-answer p50": same["p50 ms"], "ratio to same answer": ours["p50 ms"] / same["p50 ms"],
                       "search() recall@10": ours["recall@10"], "worst": ours["worst"], "rows": ours["rows"]})
        if case == "none":
            truth_none = truth
    if not args.no_faiss and truth_none is not None:
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None:
            t0 = time.perf_counter()
            index = faiss.IndexHNSWFlat(args.dim, 16, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 64
            index.add(vecs)
            build = time.perf_counter() - t0
            index.hnsw.efSearch = 100
            lat, answers = [], []
            for q in queries:
                t0 = time.perf_counter()
                _, found = index.search(vecs[pos[q]][None, :], 10)
                lat.append((time.perf_counter() - t0) * 1000)
                answers.append([int(ids[k]) for k in found[0]])
            table.append(row("none", "FAISS IndexHNSWFlat M=16 efSearch=100", lat, answers, truth_none,
                             f"in process, built in {build:.0f} s"))
    cols = ["filter", "form", "p50 ms", "p95 ms", "recall@10", "worst", "share <0.5", "rows", "note"]
    print(f"\nimage -> images, k=10, {len(queries)} queries, {args.size:,} x {args.dim}-d clustered unit vectors")
    print(tabulate([[r[c] for c in cols] for r in table], headers=cols, floatfmt=".3f"))
    cols = list(ratios[0])
    print("\nsearch() against the best raw SQL form with recall@10 >= 0.98 (goal: ratio <= 1.5); 'same answer':"
          " the best raw form given the stored image id (not its vector) and returning search()'s columns")
    print(tabulate([[r[c] for c in cols] for r in ratios], headers=cols, floatfmt=".3f"))


if __name__ == "__main__":
    main()
