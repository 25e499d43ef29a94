"""End to end on real photos: ingest coco128, embed every image and box with the pretrained
efficientnet-lite0, and search from PostgreSQL."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from visearch.db.vectors import hnsw_index_exists
from visearch.embed import embed_pending
from visearch.embedding import load_model
from visearch.errors import InvalidRequestError, NotFoundError
from visearch.ingest import ingest_coco
from visearch.search import SearchRequest, search

from conftest import last_rows, truncate_all


@pytest.fixture(scope="module")
def model():
    return load_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def coco_db(database, coco128, model):
    """coco128 ingested and embedded once for the module (images and all 939 boxes)."""
    truncate_all(database)
    ingest_coco(
        database, "coco128", coco128 / "train2017",
        coco128 / "annotations" / "instances_train2017.json", progress=False,
    )
    report = embed_pending(database, model, progress=False)
    assert report.failures == []
    return database


@pytest.fixture
def settings_for(settings):
    return settings.model_copy(update={"model": "efficientnet-lite0"})


def _search(db, settings, **kw):
    return search(db, SearchRequest(**kw), settings)


def test_every_image_and_box_gets_a_unit_vector_of_dimension_1280(coco_db):
    with coco_db.connect() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM image_embeddings), (SELECT count(*) FROM object_embeddings),"
            " (SELECT count(*) FROM embedding_queue)"
        ).fetchone()
        dims_norms = conn.execute(
            "SELECT DISTINCT vector_dims(embedding), round(vector_norm(embedding)::numeric, 4) FROM ("
            " SELECT embedding FROM image_embeddings UNION ALL SELECT embedding FROM object_embeddings) v"
        ).fetchall()
    assert counts == (128, 939, 0)
    assert dims_norms == [(1280, 1)]
    with coco_db.connect() as conn:
        assert hnsw_index_exists(conn, "image", 1) and hnsw_index_exists(conn, "object", 1)


def test_a_stored_image_finds_itself_first(coco_db, settings_for):
    with coco_db.connect() as conn:
        image_ids = [r[0] for r in conn.execute("SELECT id FROM images ORDER BY id LIMIT 20")]
    for image_id in image_ids:
        result = _search(coco_db, settings_for, image_ids=[image_id], limit=5)
        assert result.hits[0].image_id == image_id
        assert result.hits[0].score >= 0.99
        assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


def test_object_search_by_annotation_finds_the_same_concept_far_above_chance(coco_db, settings_for):
    with coco_db.connect() as conn:
        rows = conn.execute("SELECT id, concept_id FROM annotations WHERE NOT iscrowd ORDER BY id").fetchall()
    concept_of = dict(rows)
    sizes = np.bincount([c for _, c in rows])
    n = len(rows)
    # chance of a random other box sharing the query's concept, averaged over queries
    chance = float(sum(s * (s - 1) for s in sizes) / (n * (n - 1)))
    precisions = []
    for ann_id, concept in rows[::4]:
        hits = _search(coco_db, settings_for, mode="objects", annotation_id=ann_id, limit=11).hits
        others = [h for h in hits if h.annotation_id != ann_id][:10]
        precisions.append(sum(concept_of.get(h.annotation_id) == concept for h in others) / 10)
    precision_at_10 = float(np.mean(precisions))
    print(f"object search precision@10 = {precision_at_10:.3f} over {len(precisions)} queries (chance {chance:.3f})")
    assert precision_at_10 >= 0.3
    assert precision_at_10 >= 3 * chance


def test_concept_filter_with_fewer_matches_than_k_returns_exactly_that_many(coco_db, settings_for):
    with coco_db.connect() as conn:
        giraffe_images = {
            r[0] for r in conn.execute(
                "SELECT DISTINCT a.image_id FROM annotations a JOIN concepts k ON k.id = a.concept_id"
                " WHERE k.tag = 'giraffe'")
        }
        any_image = conn.execute("SELECT min(id) FROM images").fetchone()[0]
    assert 0 < len(giraffe_images) < 10
    for exact in (None, True, False):  # chosen, forced exact, forced HNSW (falls back to fill)
        result = _search(coco_db, settings_for, image_ids=[any_image], concepts=["#giraffe"], limit=10, exact=exact)
        assert {h.image_id for h in result.hits} == giraffe_images
        assert result.candidates == len(giraffe_images)
        assert result.note == f"the filters match {len(giraffe_images)} items"


def test_several_concepts_require_all_of_them(coco_db, settings_for):
    with coco_db.connect() as conn:
        expected = {
            r[0] for r in conn.execute(
                "SELECT a.image_id FROM annotations a JOIN concepts k ON k.id = a.concept_id"
                " WHERE k.tag IN ('person', 'bicycle') GROUP BY a.image_id HAVING count(DISTINCT k.tag) = 2")
        }
    result = _search(coco_db, settings_for, query="#person #bicycle", limit=100)
    assert {h.image_id for h in result.hits} == expected and expected


def test_concept_only_object_query_ranks_that_concepts_objects(coco_db, settings_for):
    result = _search(coco_db, settings_for, mode="objects", query="#dog", limit=50)
    assert result.query_source == "concepts"
    assert result.hits and {h.concept for h in result.hits} == {"dog"}
    with coco_db.connect() as conn:
        dogs = conn.execute(
            "SELECT count(*) FROM annotations a JOIN concepts k ON k.id = a.concept_id WHERE k.tag = 'dog'"
        ).fetchone()[0]
    assert len(result.hits) == min(50, dogs)


def test_unfiltered_search_goes_through_the_index_path(coco_db, settings_for):
    result = _search(coco_db, settings_for, image_ids=[1], limit=10)
    assert not result.exact and result.plan == "hnsw" and len(result.hits) == 10
    assert result.candidates_capped  # a full page: nothing was counted


def test_query_by_a_crop_of_a_file_finds_the_box(coco_db, coco128, settings_for):
    with coco_db.connect() as conn:
        ann_id, file_name, x, y, w, h = conn.execute(
            "SELECT a.id, i.file_name, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h FROM annotations a"
            " JOIN images i ON i.id = a.image_id WHERE NOT a.iscrowd ORDER BY a.bbox_w * a.bbox_h DESC LIMIT 1"
        ).fetchone()
    data = (coco128 / "train2017" / file_name).read_bytes()
    result = _search(coco_db, settings_for, mode="objects", image=data, crop_xywh=[x, y, w, h], limit=3)
    assert result.query_source == "image"
    assert result.hits[0].annotation_id == ann_id
    assert result.hits[0].score >= 0.99  # the same crop rule for stored boxes and query crops


def test_query_by_the_whole_file_finds_the_stored_image(coco_db, coco128, settings_for):
    data = (coco128 / "train2017" / "000000000009.jpg").read_bytes()
    hit = _search(coco_db, settings_for, image=data, limit=1).hits[0]
    assert hit.file_name == "000000000009.jpg" and hit.score >= 0.99


def test_mean_of_several_images(coco_db, settings_for):
    result = _search(coco_db, settings_for, image_ids=[1, 2], limit=5)
    assert {1, 2} <= {h.image_id for h in result.hits[:4]}
    assert result.hits[0].score < 0.99  # the mean is neither image


def test_score_range(coco_db, settings_for):
    everything = _search(coco_db, settings_for, image_ids=[3], limit=50, exact=True).hits
    lo, hi = everything[10].score, everything[1].score
    banded = _search(coco_db, settings_for, image_ids=[3], limit=50, min_score=lo, max_score=hi).hits
    assert [h.image_id for h in banded] == [h.image_id for h in everything[1:11]]
    cut = _search(coco_db, settings_for, image_ids=[3], limit=50, min_score=lo)
    assert len(cut.hits) == 11 and "min_score" in cut.note


def test_pages_do_not_overlap(coco_db, settings_for):
    first = _search(coco_db, settings_for, image_ids=[4], limit=10, exact=True).hits
    second = _search(coco_db, settings_for, image_ids=[4], limit=10, offset=10, exact=True).hits
    whole = _search(coco_db, settings_for, image_ids=[4], limit=20, exact=True).hits
    assert [h.image_id for h in first + second] == [h.image_id for h in whole]


def test_bad_requests_say_what_is_wrong(coco_db, settings_for):
    with pytest.raises(InvalidRequestError, match="efficientnet-lite0.*image-only"):
        _search(coco_db, settings_for, query="a giraffe")
    with pytest.raises(NotFoundError, match="unknown image id"):
        _search(coco_db, settings_for, image_ids=[999999])
    with pytest.raises(NotFoundError, match="unknown annotation id 999999"):
        _search(coco_db, settings_for, mode="objects", annotation_id=999999)
    with pytest.raises(NotFoundError, match="did you mean #giraffe"):
        _search(coco_db, settings_for, query="#girafe")
    with pytest.raises(NotFoundError, match="unknown dataset"):
        _search(coco_db, settings_for, image_ids=[1], datasets=["nope"])
    with pytest.raises(InvalidRequestError, match="query image"):
        _search(coco_db, settings_for, image=b"not an image at all")
    png = io.BytesIO()
    Image.new("RGB", (64, 48)).save(png, "PNG")
    with pytest.raises(InvalidRequestError, match="crop box"):
        _search(coco_db, settings_for, image=png.getvalue(), crop_xywh=[100, 100, 10, 10])
    with pytest.raises(InvalidRequestError, match="one query source"):
        _search(coco_db, settings_for, image_ids=[1], annotation_id=1, mode="objects")
    with pytest.raises(InvalidRequestError, match="limit"):
        _search(coco_db, settings_for, image_ids=[1], limit=0)
    with pytest.raises(InvalidRequestError, match="min_score"):
        _search(coco_db, settings_for, image_ids=[1], min_score=0.9, max_score=0.1)
    with pytest.raises(InvalidRequestError, match="nothing to search for"):
        _search(coco_db, settings_for)


def test_example_sql_for_analysts_runs_and_answers(coco_db):
    """sql/examples/*.sql are documentation; run each as psql would, so they cannot rot."""
    from visearch.resources import sql_dir

    examples = sorted((sql_dir() / "examples").glob("*.sql"))
    assert len(examples) >= 4
    results = {}
    with coco_db.connect(autocommit=True) as conn:
        for path in examples:
            rows = last_rows(conn, path.read_text())  # several statements: psycopg runs them in one go
            results[path.stem] = rows
    similar = results["similar_images_with_a_concept"]
    scores = [float(r[2]) for r in similar]
    assert len(similar) == 10 and scores == sorted(scores, reverse=True)
    # the same answer as the search service gives for that question
    person = search(coco_db, SearchRequest(image_ids=[1], concepts=["person"], limit=10, exact=True))
    assert [r[0] for r in similar] == [h.image_id for h in person.hits]
    assert results["concepts_per_dataset"][0][:2] == ("coco128", "person")
    assert results["embedding_coverage"] == [("coco128", "efficientnet-lite0", 128, 128, 939, 939, 0)]
    # near duplicates: the pairs a brute-force look at every image's 5 nearest neighbours finds
    with coco_db.connect() as conn:
        rows = conn.execute("SELECT image_id, embedding FROM image_embeddings WHERE model_id = 1 ORDER BY image_id").fetchall()
    ids = np.array([r[0] for r in rows])
    x = np.stack([r[1].to_numpy() for r in rows])
    sims = x @ x.T
    np.fill_diagonal(sims, -2)
    expected = {(int(ids[a]), int(ids[b])) for a in range(len(ids)) for b in np.argsort(-sims[a])[:5]
                if sims[a, b] >= 0.95 and ids[a] < ids[b]}
    assert {(r[0], r[1]) for r in results["near_duplicate_images"]} == expected


def test_excluded_concepts_keep_those_images_and_objects_out(coco_db, settings_for):
    with coco_db.connect() as conn:
        with_person = {r[0] for r in conn.execute(
            "SELECT a.image_id FROM annotations a JOIN concepts k ON k.id = a.concept_id WHERE k.tag = 'person'")}
    images = _search(coco_db, settings_for, image_ids=[1], exclude_concepts=["#person"], limit=200).hits
    assert len(images) == 128 - len(with_person)
    assert not {h.image_id for h in images} & with_person
    objects = _search(coco_db, settings_for, mode="objects", annotation_id=1, exclude_concepts=["person"], limit=50).hits
    assert len(objects) == 50 and all(h.concept != "person" for h in objects)


def test_concept_only_ranking_weighs_each_photo_once(coco_db, settings_for):
    """#concept alone ranks the concept's boxes by likeness to its centroid. A mean over boxes
    lets a photo with many boxes of the concept (and their tiny crops) pull the centroid to
    itself, so its own boxes fill the top; the centroid weighs each photo once and leaves
    boxes under 32 x 32 px out, so the top 10 shows more photos."""
    with coco_db.connect() as conn:
        rows = conn.execute(
            "SELECT k.tag, a.id, a.image_id, a.bbox_w * a.bbox_h, e.embedding FROM annotations a"
            " JOIN concepts k ON k.id = a.concept_id JOIN object_embeddings e ON e.annotation_id = a.id"
            " WHERE k.tag IN ('bottle', 'chair', 'person', 'car')").fetchall()
    per_tag: dict = {}
    for tag, ann, image, area, vec in rows:
        per_tag.setdefault(tag, []).append((ann, image, area, vec.to_numpy()))
    distinct_old, distinct_new = {}, {}
    for tag, boxes in per_tag.items():
        x = np.stack([b[3] for b in boxes])
        box_mean = x.mean(axis=0)  # the previous centroid: every box counts once
        top = np.argsort(-(x @ (box_mean / np.linalg.norm(box_mean))))[:10]
        distinct_old[tag] = len({boxes[k][1] for k in top})
        result = _search(coco_db, settings_for, mode="objects", query=f"#{tag}", limit=10)
        assert {h.concept for h in result.hits} == {tag} and len(result.hits) == min(10, len(boxes))
        distinct_new[tag] = len({h.image_id for h in result.hits})
        # the centroid the search used: per-image means of boxes >= 32x32, averaged, renormalised
        images: dict = {}
        for ann, image, area, vec in boxes:
            if area >= 32 * 32:
                images.setdefault(image, []).append(vec / np.linalg.norm(vec))
        means = [np.mean(v, axis=0) for v in images.values()]
        centroid = np.mean([m / np.linalg.norm(m) for m in means], axis=0)
        centroid /= np.linalg.norm(centroid)
        expected = {boxes[k][0] for k in np.argsort(-(x @ centroid))[:10]}
        assert len({h.annotation_id for h in result.hits} & expected) >= len(expected) - 1  # float ties
    print(f"distinct photos in the top 10, box mean -> per-photo centroid: "
          + ", ".join(f"#{t} {distinct_old[t]} -> {distinct_new[t]}" for t in sorted(per_tag)))
    assert sum(distinct_new.values()) >= sum(distinct_old.values())


def test_hnsw_indexes_of_high_dimensional_models_are_built_denser(coco_db):
    from visearch.db.vectors import hnsw_build_params

    with coco_db.connect() as conn:
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = hnsw_index_name('image_embeddings', 1)").fetchone()[0]
    assert sorted(options) == ["ef_construction=128", "m=24"]
    # from CLIP's 512 dimensions up (1M x 512-d needs it for recall@10 0.98); pgvector's defaults below
    assert hnsw_build_params(512) == {"m": 24, "ef_construction": 128}
    assert hnsw_build_params(384) == {"m": 16, "ef_construction": 64}


def test_unknown_model_and_concepts_never_together_say_so(coco_db, settings_for):
    with pytest.raises(NotFoundError, match="unknown model 'nope'; known models: efficientnet-lite0"):
        _search(coco_db, settings_for, image_ids=[1], model="nope")
    with pytest.raises(NotFoundError, match="no image shows #giraffe #toilet together"):
        _search(coco_db, settings_for, query="#giraffe #toilet")
