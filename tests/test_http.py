"""The HTTP API end to end: Litestar's TestClient over the real app, a real PostgreSQL, real
photos (coco128), the real efficientnet-lite0 model. No mocks.

To stay fast on a small CPU the module embeds coco128's 128 images and only the boxes of its
first 12 images (54 boxes): the other boxes' queue rows are deleted before embedding, so object
searches see those 54 (the rest have neither a vector nor a queue row, so coverage, which is
read from the queue, does not count them as missing).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient
from PIL import Image

from visearch.http.app import create_app

from conftest import assert_error, ingest_coco128_embedded, sql

OBJECT_IMAGES = 12  # boxes of images 1..12 are embedded


@pytest.fixture(scope="module")
def api_settings(settings):
    return settings.model_copy(update={"api_keys": [], "http_max_body_bytes": 8 * 1024 * 1024})


@pytest.fixture(scope="module")
def coco(database, coco128):
    """coco128 in dataset 'coco128': all images embedded, boxes of the first 12 images."""
    report = ingest_coco128_embedded(database, coco128, boxes_of_images=OBJECT_IMAGES)
    assert report.failures == [] and report.embedded["image"] == 128
    return database


@pytest.fixture(scope="module")
def client(coco, api_settings):
    with TestClient(create_app(api_settings, coco)) as c:
        yield c


def _image_bytes(db, image_id) -> bytes:
    return bytes(sql(db, "SELECT content FROM image_content WHERE image_id = %s", (image_id,))[0][0])


def _search(client, expect=200, **body):
    r = client.post("/v1/search", json=body)
    assert r.status_code == expect, r.text
    return r.json()


def _vector(db, image_id) -> np.ndarray:
    return sql(db, "SELECT embedding FROM image_embeddings WHERE image_id = %s", (image_id,))[0][0].to_numpy()


def _assert_histogram(res, query_ids=()):
    h = res["histogram"]
    assert h["range"] == "observed" and h["bins"] == len(h["counts"]) == len(h["edges"]) - 1
    assert sum(h["counts"]) == h["considered"]
    # the histogram leaves the query's own image out (it would score 1.0 and stretch the range)
    assert res["candidates"] - h["considered"] in (0, 1)
    assert not h["sampled"] and not res["candidates_capped"]
    key = "annotation_id" if res["mode"] == "objects" else "image_id"
    others = [i["score"] for i in res["items"] if i[key] not in query_ids]  # the query's own: left out
    if others:
        assert h["lo"] <= min(others) + 1e-9
        assert h["hi"] >= max(others) - 1e-9
        assert h["edges"][0] == h["lo"] and h["edges"][-1] == h["hi"]


# ---- search modes ------------------------------------------------------------------------------

def test_search_by_image_id_finds_itself_first_with_a_histogram_over_every_candidate(client):
    res = _search(client, image_ids=[7], limit=5)
    assert res["mode"] == "images" and res["query_source"] == "image_ids"
    assert res["model"] == "efficientnet-lite0"
    assert [i["rank"] for i in res["items"]] == [1, 2, 3, 4, 5]
    assert res["items"][0]["image_id"] == 7 and res["items"][0]["score"] > 0.999
    scores = [i["score"] for i in res["items"]]
    assert scores == sorted(scores, reverse=True)
    assert res["candidates"] == 128 and res["total"] == 100  # default depth 100 kept for paging
    assert res["next_url"] == f"/v1/collections/{res['collection_id']}?offset=5&limit=5"
    assert isinstance(res["exact"], bool) and res["note"] is None
    _assert_histogram(res, query_ids={7})
    assert res["histogram"]["hi"] < res["items"][0]["score"]  # the image itself (score 1) left out


def test_several_image_ids_search_by_the_renormalised_mean_of_their_unit_vectors(client, coco):
    res = _search(client, image_ids=[3, 40], limit=10, exact=True)
    mean = _vector(coco, 3) / np.linalg.norm(_vector(coco, 3)) + _vector(coco, 40) / np.linalg.norm(_vector(coco, 40))
    mean /= np.linalg.norm(mean)
    for item in res["items"]:
        v = _vector(coco, item["image_id"])
        assert item["score"] == pytest.approx(float(mean @ v / np.linalg.norm(v)), abs=1e-5)
    assert {3, 40} <= {i["image_id"] for i in res["items"][:10]}


def test_search_by_annotation_returns_objects_with_boxes_and_crop_links(client, coco):
    ann_id, image_id = sql(coco, "SELECT id, image_id FROM annotations WHERE image_id = 2 ORDER BY id LIMIT 1")[0]
    res = _search(client, annotation_id=ann_id, limit=5)
    assert res["mode"] == "objects" and res["query_source"] == "annotation"
    first = res["items"][0]
    assert first["annotation_id"] == ann_id and first["image_id"] == image_id and first["score"] > 0.999
    assert len(first["bbox_xywh"]) == 4 and first["concept"]
    assert first["crop_url"] == f"/v1/annotations/{ann_id}/crop"
    embedded_boxes = sql(coco, "SELECT count(*) FROM object_embeddings")[0][0]
    assert res["candidates"] == embedded_boxes
    # Coverage of an active model is read from the queue: the boxes whose queue rows this
    # module deleted are neither ready nor queued, so the search reports no gap for them.
    assert res["coverage"] is None
    _assert_histogram(res, query_ids={ann_id})


def test_search_by_uploaded_image_and_by_a_crop_of_it(client, coco):
    data = _image_bytes(coco, 5)
    r = client.post("/v1/search", files={"image": ("q.jpg", data, "image/jpeg")},
                    data={"params": json.dumps({"limit": 3})})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["query_source"] == "image"
    assert res["items"][0]["image_id"] == 5 and res["items"][0]["score"] > 0.99
    # the crop of a stored box, framed by the same rule, finds that box
    ann_id, x, y, w, h = sql(coco, "SELECT id, bbox_x, bbox_y, bbox_w, bbox_h FROM annotations"
                                    " WHERE image_id = 5 ORDER BY bbox_w * bbox_h DESC LIMIT 1")[0]
    r = client.post("/v1/search", files={"image": ("q.jpg", data, "image/jpeg")},
                    data={"params": json.dumps({"mode": "objects", "limit": 3, "crop_xywh": [x, y, w, h]})})
    assert r.status_code == 200, r.text
    first = r.json()["items"][0]
    assert first["annotation_id"] == ann_id and first["score"] > 0.99
    # the collection remembers the upload by hash, not its bytes
    coll = client.get(f"/v1/collections/{r.json()['collection_id']}").json()["collection"]
    assert coll["uploaded_image"]["bytes"] == len(data) and coll["query"]["crop_xywh"] == [x, y, w, h]


def test_concept_only_search_ranks_the_concepts_images(client, coco):
    expected = {r[0] for r in sql(coco, "SELECT DISTINCT a.image_id FROM annotations a"
                                         " JOIN concepts k ON k.id = a.concept_id WHERE k.tag = 'dog'")}
    res = _search(client, query="#dog", limit=50)
    assert res["query_source"] == "concepts" and res["exact"] is True
    assert {i["image_id"] for i in res["items"]} == expected and res["candidates"] == len(expected)
    assert res["note"] == f"the filters match {len(expected)} items"  # why fewer than limit
    _assert_histogram(res)


# ---- filters and score range -------------------------------------------------------------------

def test_filters_concepts_required_and_excluded_metadata_and_created_range(client, coco):
    person = {r[0] for r in sql(coco, "SELECT DISTINCT image_id FROM annotations a JOIN concepts k"
                                       " ON k.id = a.concept_id WHERE k.tag = 'person'")}
    res = _search(client, image_ids=[1], concepts=["person"], limit=200, depth=200)
    assert {i["image_id"] for i in res["items"]} == person and res["candidates"] == len(person)
    res = _search(client, image_ids=[1], exclude_concepts=["#person"], limit=200, depth=200)
    assert {i["image_id"] for i in res["items"]} == set(range(1, 129)) - person
    _assert_histogram(res, query_ids={1})

    license_3 = {r[0] for r in sql(coco, "SELECT id FROM images WHERE metadata @> '{\"license\": 3}'")}
    assert 0 < len(license_3) < 128
    res = _search(client, image_ids=[1], metadata={"license": 3}, limit=200, depth=200)
    assert {i["image_id"] for i in res["items"]} == license_3

    res = _search(client, image_ids=[1], created_to="2000-01-01T00:00:00Z", limit=10)
    assert res["items"] == [] and res["candidates"] == 0 and res["note"] == "the filters match 0 items"
    assert res["histogram"]["considered"] == 0
    res = _search(client, image_ids=[1], created_from="2000-01-01T00:00:00Z", limit=10)
    assert res["candidates"] == 128


def test_histogram_samples_large_candidate_sets_and_leaves_the_query_out(client, coco, api_settings):
    from visearch.search import SearchRequest, search
    from visearch.search import score_histogram

    result = search(coco, SearchRequest(image_ids=[1], limit=5), api_settings)
    assert result.candidates_capped  # a full page: the search itself counted nothing
    h = score_histogram(coco, result, max_considered=40)
    assert h.sampled and sum(h.counts) == h.considered and 10 < h.considered < 100  # Bernoulli, p = 40/128
    whole = score_histogram(coco, result)
    assert not whole.sampled and whole.considered == 127 and whole.hi < 0.999  # image 1 itself left out
    res = client.post("/v1/search", json={"image_ids": [1], "limit": 5}).json()
    assert res["candidates_capped"] is False and res["candidates"] == 128  # known from the histogram
    assert res["histogram"]["considered"] == sum(res["histogram"]["counts"]) == 127


def test_score_range_cuts_and_says_so(client):
    full = _search(client, image_ids=[9], limit=50, exact=True)
    threshold = full["items"][5]["score"]
    res = _search(client, image_ids=[9], limit=50, min_score=threshold, exact=True)
    assert [i["image_id"] for i in res["items"]] == [i["image_id"] for i in full["items"][:6]]
    assert "min_score" in res["note"]
    assert res["candidates"] == 128 and sum(res["histogram"]["counts"]) == 127  # range not applied, query left out
    res = _search(client, image_ids=[9], limit=5, max_score=0.9, exact=True)
    assert all(i["score"] <= 0.9 for i in res["items"]) and 9 not in [i["image_id"] for i in res["items"]]
    assert res["items"][0]["image_id"] == full["items"][1]["image_id"]


def test_datasets_filter_upload_and_background_embedding(client, coco):
    r = client.post("/v1/datasets", json={"name": "uploads", "description": "by HTTP"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["search_enabled"] and ds["images"] == 0
    assert client.post("/v1/datasets", json={"name": "uploads"}).status_code == 409
    for image_id in (10, 11):
        up = client.post(f"/v1/datasets/{ds['id']}/images",
                         files={"file": (f"{image_id}.jpg", _image_bytes(coco, image_id), "image/jpeg")},
                         data={"labels": "uploaded, mine", "metadata": '{"origin": "http"}'})
        assert up.status_code == 201, up.text
        assert up.json()["created"] is True and up.json()["labels_added"] == 2
    pending = _search(client, image_ids=[1], limit=3)
    assert pending["coverage"] == {"kind": "image", "total": 130, "ready": 128, "queued": 2, "failed": 0,
                                   "unqueued": 0}
    assert "still being prepared" in pending["note"]
    trig = client.post(f"/v1/datasets/{ds['id']}/embed")
    assert trig.status_code == 202, trig.text
    assert trig.json()["handled_by"] == "server" and trig.json()["queued"] >= 2
    app_jobs = client.app.state.jobs
    assert app_jobs.wait(timeout=120)
    status = client.get(f"/v1/datasets/{ds['id']}/status").json()
    [model] = status["models"]
    assert model["embedded"] == 2 and model["stale"] == 0 and model["covered"] is True
    assert status["job"]["running"] is False and status["job"]["embedded_total"] >= 2

    res = _search(client, image_ids=[10], datasets=["uploads"], limit=10)
    assert [i["dataset"] for i in res["items"]] == ["uploads", "uploads"] and res["candidates"] == 2
    assert res["items"][0]["score"] > 0.999  # the copy of image 10 has the same pixels
    res = _search(client, image_ids=[10], metadata={"origin": "http"}, concepts=["mine"], limit=10)
    assert len(res["items"]) == 2
    # disabling AI search takes it out of search (and naming it is refused)
    assert client.post(f"/v1/datasets/{ds['id']}/disable").json()["search_enabled"] is False
    assert _search(client, image_ids=[1], limit=200, depth=200)["candidates"] == 128
    err = _search(client, 422, image_ids=[1], datasets=["uploads"])
    assert "disabled" in err["detail"]
    assert client.post(f"/v1/datasets/{ds['id']}/embed").status_code == 422
    assert client.post(f"/v1/datasets/{ds['id']}/enable").json()["search_enabled"] is True
    listed = {d["name"]: d for d in client.get("/v1/datasets").json()}
    assert listed["uploads"]["images"] == 2 and listed["coco128"]["annotations"] == 939


# ---- pagination and collections ----------------------------------------------------------------

def test_pages_are_exactly_the_first_search_s_ranking(client, coco):
    whole = _search(client, image_ids=[20], limit=60, depth=60, exact=True)
    res = _search(client, image_ids=[20], limit=7, depth=60, exact=True)
    seen = [i["image_id"] for i in res["items"]]
    url = res["next_url"]
    first_page_2 = None
    while url:
        page = client.get(url).json()
        if first_page_2 is None:
            first_page_2 = page
        seen += [i["image_id"] for i in page["items"]]
        assert [i["rank"] for i in page["items"]] == list(range(page["offset"] + 1, page["offset"] + 1 + len(page["items"])))
        url = page["next_url"]
    assert seen == [i["image_id"] for i in whole["items"]] and len(seen) == 60
    # changed data does not move the pages: the ranking was frozen at search time
    original = _vector(coco, 128)
    with coco.transaction() as conn:
        conn.execute("UPDATE image_embeddings SET embedding = (SELECT embedding FROM image_embeddings"
                     " WHERE image_id = 20) WHERE image_id = 128")
    try:
        again = client.get(f"/v1/collections/{res['collection_id']}?offset=7&limit=7").json()
        assert again["items"] == first_page_2["items"]
        fresh = _search(client, image_ids=[20], limit=2, exact=True)
        assert fresh["items"][1]["image_id"] == 128  # a new search does see the change
    finally:
        with coco.transaction() as conn:
            conn.execute("UPDATE image_embeddings SET embedding = %s WHERE image_id = 128", (original,))


def test_the_next_search_replaces_the_temporary_collection_unless_saved(client):
    first = _search(client, image_ids=[30], limit=3)["collection_id"]
    second = _search(client, image_ids=[31], limit=3)["collection_id"]
    r = client.get(f"/v1/collections/{first}")
    assert r.status_code == 404 and "replaced by a newer search" in r.json()["detail"]
    saved = client.post(f"/v1/collections/{second}/save", json={"name": "bikes"})
    assert saved.status_code == 200 and saved.json()["saved"] is True and saved.json()["name"] == "bikes"
    third = _search(client, image_ids=[32], limit=3)["collection_id"]
    assert client.get(f"/v1/collections/{second}").status_code == 200
    listing = client.get("/v1/collections").json()
    assert [c["id"] for c in listing] == [third, second]
    assert [c["id"] for c in client.get("/v1/collections?saved=true").json()] == [second]
    r = client.post(f"/v1/collections/{third}/save", json={"name": "bikes"})
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    assert client.delete(f"/v1/collections/{second}").status_code == 204
    assert client.get(f"/v1/collections/{second}").status_code == 404
    assert client.delete(f"/v1/collections/{second}").status_code == 404


def test_collection_tags_and_copy_into_another_dataset(client, coco):
    res = _search(client, query="#giraffe", limit=10)
    cid = res["collection_id"]
    giraffes = {i["image_id"] for i in res["items"]}
    assert giraffes
    assert client.post(f"/v1/collections/{cid}/save", json={"name": "giraffes"}).status_code == 200
    r = client.post(f"/v1/collections/{cid}/tags", json={"concepts": ["tall animal", "savanna"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"images": len(giraffes), "concepts": ["tall animal", "savanna"],
                        "concepts_created": 2, "labels_added": 2 * len(giraffes),
                        "images_tagged": len(giraffes), "images_gone": []}
    again = client.post(f"/v1/collections/{cid}/tags", json={"concepts": ["tall animal"]}).json()
    assert again["labels_added"] == 0
    # tags are concept filters at once
    tagged = _search(client, query="#tall_animal", limit=50)
    assert {i["image_id"] for i in tagged["items"]} == giraffes
    labels = client.get(f"/v1/images/{min(giraffes)}").json()["labels"]
    assert {"concept": "savanna", "source": "collection", "score": None} in labels

    r = client.delete(f"/v1/collections/{cid}/tags?concept=savanna")
    assert r.status_code == 200 and r.json()["removed"] == len(giraffes)
    assert _search(client, 404, query="#savanna_x")["error"] == "not_found"

    r = client.post(f"/v1/collections/{cid}/copy", json={"dataset": "giraffe set"})
    assert r.status_code == 404
    r = client.post(f"/v1/collections/{cid}/copy", json={"dataset": "giraffe set", "create": True, "annotations": True})
    assert r.status_code == 200, r.text
    copy = r.json()
    assert copy["images_copied"] == len(giraffes) and copy["images_existing"] == 0
    assert copy["annotations_copied"] == sql(coco, "SELECT count(*) FROM annotations WHERE image_id = ANY(%s)",
                                              (list(giraffes),))[0][0]
    rows = sql(coco, "SELECT i.sha256, length(c.content), (SELECT count(*) FROM embedding_queue q"
                      " WHERE q.item_kind = 'image' AND q.item_id = i.id)"
                      " FROM images i JOIN image_content c ON c.image_id = i.id WHERE i.dataset_id = %s",
                (copy["dataset_id"],))
    originals = sql(coco, "SELECT i.sha256, length(c.content) FROM images i JOIN image_content c"
                           " ON c.image_id = i.id WHERE i.id = ANY(%s)", (list(giraffes),))
    assert sorted((bytes(s), n) for s, n, _ in rows) == sorted((bytes(s), n) for s, n in originals)
    assert all(q == 1 for _, _, q in rows)  # the triggers queued each new image for embedding
    r = client.post(f"/v1/collections/{cid}/copy", json={"dataset": "giraffe set"})
    assert r.json()["images_copied"] == 0 and r.json()["images_existing"] == len(giraffes)


# ---- images ----------------------------------------------------------------------------------

def test_upload_original_thumbnail_and_crop(client, coco):
    ds = client.post("/v1/datasets", json={"name": "pngs"}).json()
    png = io.BytesIO()
    Image.open(io.BytesIO(_image_bytes(coco, 12))).save(png, format="PNG")
    up = client.post(f"/v1/datasets/{ds['id']}/images", files={"file": ("twelve.png", png.getvalue(), "image/png")})
    assert up.status_code == 201, up.text
    info = up.json()
    assert info["format"] == "PNG" and info["created"] is True
    dup = client.post(f"/v1/datasets/{ds['id']}/images", files={"file": ("again.png", png.getvalue(), "image/png")})
    assert dup.status_code == 201 and dup.json()["created"] is False and dup.json()["id"] == info["id"]

    r = client.get(info["image_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == png.getvalue()
    r = client.get("/v1/images/12/original")
    assert r.headers["content-type"] == "image/jpeg" and r.content == _image_bytes(coco, 12)
    detail = client.get(f"/v1/images/{info['id']}").json()
    assert detail["file_name"] == "twelve.png" and detail["dataset"] == "pngs" and detail["has_bytes"]

    r = client.get(f"/v1/images/{info['id']}/thumbnail?size=64")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "JPEG" and max(thumb.size) == 64
    assert thumb.size[0] / thumb.size[1] == pytest.approx(info["width"] / info["height"], rel=0.05)
    assert client.get("/v1/images/12/thumbnail?size=100000").status_code == 400
    assert client.get("/v1/images/12/thumbnail?size=2").status_code == 400

    ann_id, w, h = sql(coco, "SELECT id, bbox_w, bbox_h FROM annotations WHERE image_id = 12 ORDER BY id LIMIT 1")[0]
    r = client.get(f"/v1/annotations/{ann_id}/crop")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    crop = Image.open(io.BytesIO(r.content))
    assert crop.size[0] == crop.size[1] >= max(w, h)  # square, box plus margin
    r = client.get(f"/v1/annotations/{ann_id}/crop?size=32")
    assert Image.open(io.BytesIO(r.content)).size == (32, 32)


# ---- errors ----------------------------------------------------------------------------------

def test_request_too_large_is_413(coco, api_settings):
    small = api_settings.model_copy(update={"http_max_body_bytes": 64 * 1024})
    with TestClient(create_app(small, coco)) as c:
        ds = c.get("/v1/datasets").json()[0]["id"]
        big = _image_bytes(coco, 1)
        assert len(big) > 64 * 1024
        body = assert_error(c.post(f"/v1/datasets/{ds}/images", files={"file": ("a.jpg", big, "image/jpeg")}),
                      413, "request_too_large")
        assert "VISEARCH_HTTP_MAX_BODY_BYTES" in body["detail"]
        assert_error(c.post("/v1/search", files={"image": ("a.jpg", big, "image/jpeg")}), 413, "request_too_large")


def test_not_an_image_is_415_and_a_truncated_one_422(client, coco):
    ds = client.get("/v1/datasets").json()[0]["id"]
    assert_error(client.post(f"/v1/datasets/{ds}/images", files={"file": ("a.txt", b"just text", "text/plain")}),
           415, "unsupported_image")
    assert_error(client.post("/v1/search", files={"image": ("a.jpg", b"just text", "image/jpeg")}),
           415, "unsupported_image")
    truncated = _image_bytes(coco, 3)[:5000]
    body = assert_error(client.post(f"/v1/datasets/{ds}/images", files={"file": ("t.jpg", truncated, "image/jpeg")}),
                  422, "undecodable_image")
    assert "truncated" in body["detail"]
    assert_error(client.post("/v1/search", files={"image": ("t.jpg", truncated, "image/jpeg")}), 422, "undecodable_image")
    assert_error(client.post("/v1/search", content=b"plain", headers={"content-type": "text/plain"}), 415)


def test_decompression_bomb_is_refused_before_decoding(client):
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, format="PNG")  # 144 Mpx in ~20 kB
    assert len(bomb.getvalue()) < 100_000
    ds = client.get("/v1/datasets").json()[0]["id"]
    body = assert_error(client.post(f"/v1/datasets/{ds}/images", files={"file": ("b.png", bomb.getvalue(), "image/png")}),
                  413, "image_too_large")
    assert "decompression-bomb" in body["detail"]
    assert_error(client.post("/v1/search", files={"image": ("b.png", bomb.getvalue(), "image/png")}), 413, "image_too_large")


def test_unknown_ids_are_404(client):
    assert "unknown image id" in assert_error(client.post("/v1/search", json={"image_ids": [999999]}), 404, "not_found")["detail"]
    assert_error(client.post("/v1/search", json={"annotation_id": 999999}), 404, "not_found")
    assert_error(client.post("/v1/search", json={"image_ids": [1], "datasets": ["nope"]}), 404, "not_found")
    body = assert_error(client.post("/v1/search", json={"query": "#dgo"}), 404, "not_found")
    assert "#dog" in body["detail"]  # did you mean
    assert_error(client.post("/v1/search", json={"image_ids": [1], "model": "nope"}), 404, "not_found")
    for url in ("/v1/images/999999", "/v1/images/999999/original", "/v1/images/999999/thumbnail",
                "/v1/annotations/999999/crop", "/v1/collections/999999", "/v1/datasets/999999",
                "/v1/datasets/999999/status"):
        assert_error(client.get(url), 404, "not_found")
    assert_error(client.post("/v1/datasets/999999/images", files={"file": ("a.png", b"x", "image/png")}), 404)
    assert_error(client.get("/v1/nothing-here"), 404)


def test_invalid_boxes_and_requests_are_422_or_400(client, coco):
    data = _image_bytes(coco, 5)
    for box in ([5000, 5000, 10, 10], [0, 0, 0, 10], [-50, -50, 10, 10]):
        body = assert_error(client.post("/v1/search", files={"image": ("q.jpg", data, "image/jpeg")},
                                  data={"params": json.dumps({"crop_xywh": box})}), 422, "invalid_box")
        assert "box" in body["detail"]
    assert_error(client.post("/v1/search", json={"image_ids": [1], "crop_xywh": [0, 0, 5, 5]}), 422, "invalid_request")
    assert_error(client.post("/v1/search", json={"image_ids": [1], "annotation_id": 1}), 422, "invalid_request")
    assert_error(client.post("/v1/search", json={}), 422, "invalid_request")  # nothing to search for
    assert_error(client.post("/v1/search", json={"image_ids": [1], "min_score": 0.9, "max_score": 0.1}), 422)
    assert_error(client.post("/v1/search", json={"image_ids": [1], "limit": 50, "depth": 10}), 422)
    # malformed: 400 with the field named
    assert "limit" in assert_error(client.post("/v1/search", json={"image_ids": [1], "limit": 0}), 400, "bad_request")["detail"]
    assert_error(client.post("/v1/search", json={"image_ids": [1], "min_score": 2}), 400, "bad_request")
    assert_error(client.post("/v1/search", json={"image_ids": [1], "typo": 1}), 400, "bad_request")
    assert_error(client.post("/v1/search", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert_error(client.post("/v1/search", json={"image_ids": [1], "crop_xywh": [1, 2, 3]}), 400)
    assert_error(client.post("/v1/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"params": "{oops"}), 400)
    assert_error(client.post("/v1/search", files={"other": ("q.jpg", data, "image/jpeg")}), 400)
    assert_error(client.post("/v1/collections/1/save", json={"name": ""}), 400)
    ds = client.get("/v1/datasets").json()[0]["id"]
    for metadata in ('{"a": NaN}', "[1, 2]", "{oops"):
        assert_error(client.post(f"/v1/datasets/{ds}/images", files={"file": ("q.jpg", data, "image/jpeg")},
                           data={"metadata": metadata}), 400, "bad_request")


def test_text_on_an_image_only_model_is_422_naming_the_model(client):
    body = assert_error(client.post("/v1/search", json={"query": "a dog on a sofa"}), 422, "invalid_request")
    assert "efficientnet-lite0" in body["detail"] and "image-only" in body["detail"]


def test_api_keys(coco, api_settings):
    keyed = api_settings.model_copy(update={"api_keys": ["alice:secret-a-0123456789", "bare-secret-0123456789"]})
    with TestClient(create_app(keyed, coco)) as c:
        body = assert_error(c.post("/v1/search", json={"image_ids": [1]}), 401, "unauthorized")
        assert "X-API-Key" in body["detail"]
        assert_error(c.get("/v1/datasets", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        assert c.get("/health").status_code == 200 and c.get("/health").json()["api_keys_required"] is True
        assert c.get("/schema/openapi.json").status_code == 200
        a = c.post("/v1/search", json={"image_ids": [1], "limit": 2}, headers={"X-API-Key": "secret-a-0123456789"})
        b = c.post("/v1/search", json={"image_ids": [2], "limit": 2}, headers={"X-API-Key": "bare-secret-0123456789"})
        assert a.status_code == b.status_code == 200
        # each identity has its own temporary collection, invisible to the other
        assert c.get(f"/v1/collections/{a.json()['collection_id']}", headers={"X-API-Key": "secret-a-0123456789"}).status_code == 200
        assert_error(c.get(f"/v1/collections/{a.json()['collection_id']}", headers={"X-API-Key": "bare-secret-0123456789"}), 404)
    owners = {r[0] for r in sql(coco, "SELECT owner FROM collections")}
    assert "alice" in owners and any(o.startswith("key-") for o in owners)
    assert not any("secret" in o for o in owners)


def test_serve_refuses_to_listen_beyond_localhost_without_keys(monkeypatch):
    from visearch.cli import cli
    from visearch.http.cli import is_loopback

    monkeypatch.delenv("VISEARCH_API_KEYS", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "refusing to listen on 0.0.0.0 without API keys" in result.output
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_openapi_documents_every_endpoint(client):
    spec = client.get("/schema/openapi.json").json()
    assert {"/v1/search", "/v1/collections", "/v1/collections/{collection_id}", "/v1/collections/{collection_id}/save",
            "/v1/collections/{collection_id}/tags", "/v1/collections/{collection_id}/copy", "/v1/datasets",
            "/v1/datasets/{dataset_id}/status", "/v1/datasets/{dataset_id}/embed", "/v1/datasets/{dataset_id}/images",
            "/v1/images/{image_id}/original", "/v1/images/{image_id}/thumbnail",
            "/v1/annotations/{annotation_id}/crop"} <= set(spec["paths"])
    body = spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["$ref"] == "#/components/schemas/SearchBody"
    assert "SearchBody" in spec["components"]["schemas"]
    assert body["multipart/form-data"]["schema"]["required"] == ["image"]
    assert "cosine" in spec["paths"]["/v1/search"]["post"]["description"]
