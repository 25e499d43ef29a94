"""HNSW tail recall on real vectors: the 10,000 CIFAR-10 test images as efficientnet-lite0
vectors (1280-d; embedded once, ~2 min, then cached in pytest's cache folder under a key of the
model and the file list: tests/cifar_vectors.py).

Mean recall@10 of an HNSW search hides its tail: issue 9 found two Caltech-101 queries that got
none of their exact top 10. Every one of the 10,000 images is a query here, against the exact
top 10 from numpy; at visearch's default settings (the index built with
``visearch.db.vectors.hnsw_build_params``, searched at ``Settings.hnsw_ef_search``) no query
may get fewer than 8 of its exact top 10. Measured on this set (bench/bench_search.py reports
the same worst-query figures; bench/bench_hnsw_tail.py prints the table per build and
ef_search): pgvector's own defaults (m 16, ef_construction 64, ef_search 40) give mean 0.9983
(below the 0.999 asserted) and, depending on the build, one query at 0.7 or none below 0.8;
m 24 / ef_construction 128 at ef_search 100 give mean 0.9999, worst 0.9.
"""

from __future__ import annotations

import numpy as np
import pytest

from cifar_vectors import cifar_vectors, exact_top10
from synthetic_vectors import load_vectors
from visearch.db.vectors import ensure_hnsw_index, hnsw_index_name
from visearch.search import SearchRequest, search

MODEL = "cifar-efficientnet-lite0"


@pytest.fixture(scope="module")
def cifar_db(database, cifar10, request):
    """The CIFAR-10 test set's vectors as images 1..10,000 of model MODEL with the default HNSW
    index for 1280-d, and the exact top 10 of each image (numpy, ids)."""
    from conftest import truncate_all

    vectors, _labels = cifar_vectors(cifar10, request.config.cache.mkdir("cifar-vectors"))
    truncate_all(database)
    with database.connect() as conn:
        model_id = load_vectors(conn, vectors, model=MODEL, dataset="cifar", activate=False)
        ensure_hnsw_index(conn, "image", model_id)
        conn.commit()
    return database, model_id, exact_top10(vectors)  # image ids start at 1


def test_no_query_falls_below_recall_08_at_the_default_settings(cifar_db, settings):
    db, model_id, truth = cifar_db
    # every image through the index in one statement, at the search's default ef_search
    with db.connect() as conn:
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(settings.hnsw_ef_search),))
        rows = conn.execute(
            "SELECT q.image_id, ARRAY(SELECT e.image_id FROM image_embeddings e WHERE e.model_id = %(m)s"
            "                         ORDER BY e.embedding::vector(1280) <=> q.embedding::vector(1280) LIMIT 10)"
            " FROM image_embeddings q WHERE q.model_id = %(m)s ORDER BY q.image_id", {"m": model_id}).fetchall()
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT e.image_id FROM image_embeddings e WHERE e.model_id = %(m)s"
            " ORDER BY e.embedding::vector(1280) <=> (SELECT embedding FROM image_embeddings WHERE image_id = 1)::vector(1280)"
            " LIMIT 10", {"m": model_id}))
    assert f"Index Scan using {hnsw_index_name('image', model_id)}" in plan, plan  # the index answered
    recalls = np.array([len(set(found) & set(truth[q - 1].tolist())) / 10 for q, found in rows])
    assert len(recalls) == 10_000
    worst = np.argsort(recalls, kind="stable")[:20]
    assert recalls.min() >= 0.8, [(int(i) + 1, recalls[i]) for i in worst[:5]]
    assert recalls.mean() >= 0.999 and (recalls < 0.5).sum() == 0
    # and search() itself, on the twenty hardest queries (it can only add an exact re-check)
    for i in worst:
        result = search(db, SearchRequest(model=MODEL, image_ids=[int(i) + 1], limit=10), settings)
        got = len({h.image_id for h in result.hits} & set(truth[i].tolist())) / 10
        assert got >= 0.8 and len(result.hits) == 10, (int(i) + 1, got)
