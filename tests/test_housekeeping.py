"""Housekeeping through the HTTP API and the CLI, on real coco128 photos in a real PostgreSQL:
rename and delete a dataset (with its vectors and queue rows), delete images, find an image by
file name or COCO id (with the index, EXPLAIN), concept autocomplete, models, collection export
and item removal."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from visearch.http.app import create_app

from conftest import sql

FILES = ["000000000009.jpg", "000000000025.jpg", "000000000030.jpg"]


@pytest.fixture
def two_datasets(db, coco128, tmp_path):
    """coco128 (images and boxes, queued for efficientnet-lite0, none embedded) and 'small' (3
    of its photos, embedded)."""
    from visearch.db.models import register_model
    from visearch.embed import embed_pending
    from visearch.embedding import load_model
    from visearch.ingest import ingest_coco, ingest_folder

    ingest_coco(db, "coco128", coco128 / "train2017", coco128 / "annotations" / "instances_train2017.json",
                progress=False)
    folder = tmp_path / "small"
    folder.mkdir()
    for name in FILES:
        shutil.copy(coco128 / "train2017" / name, folder / name)
    ingest_folder(db, "small", folder, progress=False)
    model = load_model("efficientnet-lite0")
    with db.transaction() as conn:
        register_model(conn, model.name, model.dim, model.embeds_text)
    small = sql(db, "SELECT id FROM datasets WHERE name = 'small'")[0][0]
    embed_pending(db, model, dataset_ids=[small], progress=False)
    return db


@pytest.fixture
def client(db, settings):
    with TestClient(create_app(settings.model_copy(update={"api_keys": []}), db)) as c:
        yield c


def _dataset_id(db, name):
    return sql(db, "SELECT id FROM datasets WHERE name = %s", (name,))[0][0]


def test_rename_and_delete_a_dataset_with_its_vectors_and_queue_rows(two_datasets, client):
    db = two_datasets
    small, coco = _dataset_id(db, "small"), _dataset_id(db, "coco128")
    r = client.patch(f"/v1/datasets/{small}", json={"name": "tiny"})
    assert r.status_code == 200 and r.json()["name"] == "tiny"
    assert client.patch(f"/v1/datasets/{small}", json={"name": "coco128"}).status_code == 409
    assert client.patch(f"/v1/datasets/{small}", json={"name": "  "}).status_code in (400, 422)
    assert client.patch("/v1/datasets/999999", json={"name": "x"}).status_code == 404

    queued = sql(db, "SELECT count(*) FROM embedding_queue WHERE dataset_id = %s", (coco,))[0][0]
    assert queued == 128 + 939
    r = client.delete(f"/v1/datasets/{coco}")
    assert r.status_code == 200, r.text
    assert r.json() == {"dataset_id": coco, "name": "coco128", "images": 128, "annotations": 939, "vectors": 0,
                        "queue_rows": queued, "collection_items": 0}
    r = client.delete(f"/v1/datasets/{small}")
    assert r.json()["vectors"] == 3 and r.json()["queue_rows"] == 0
    assert sql(db, "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM image_embeddings),"
                    " (SELECT count(*) FROM embedding_queue), (SELECT count(*) FROM image_content)")[0] == (0, 0, 0, 0)
    assert client.delete(f"/v1/datasets/{coco}").status_code == 404


def test_find_images_by_file_name_or_coco_id_delete_them_and_the_cli_prints_a_link(db, coco128, client):
    from visearch.cli import cli
    from visearch.ingest import ingest_coco

    ingest_coco(db, "coco128", coco128 / "train2017", coco128 / "annotations" / "instances_train2017.json",
                progress=False)
    by_name = client.get("/v1/images", params={"q": "000000000009.jpg"}).json()
    by_coco_id = client.get("/v1/images", params={"q": "9"}).json()
    assert len(by_name) == 1 and by_name == by_coco_id
    assert by_name[0]["external_id"] == "9" and by_name[0]["thumbnail_url"].startswith(f"/v1/images/{by_name[0]['id']}/")
    prefixed = client.get("/v1/images", params={"q": "00000000003", "prefix": True}).json()
    assert {m["file_name"] for m in prefixed} == {"000000000030.jpg", "000000000034.jpg", "000000000036.jpg"}
    assert client.get("/v1/images", params={"q": "9%"}).json() == []  # LIKE wildcards are literal
    assert client.get("/v1/images").status_code == 400

    runner = CliRunner()
    out = runner.invoke(cli, ["--database-url", db.url, "image", "find", "9"])
    assert out.exit_code == 0, out.output
    image_id = by_name[0]["id"]
    assert f"http://127.0.0.1:8000/#image={image_id}" in out.output
    assert str(coco128 / "train2017" / "000000000009.jpg") in out.output

    r = client.post("/v1/images/delete", json={"image_ids": [image_id, 999999]})
    assert r.status_code == 200 and r.json() == {"deleted": [image_id]}
    assert client.get(f"/v1/images/{image_id}").status_code == 404
    assert sql(db, "SELECT count(*) FROM annotations WHERE image_id = %s", (image_id,))[0][0] == 0
    assert client.post("/v1/images/delete", json={"image_ids": []}).status_code == 400
    out = runner.invoke(cli, ["--database-url", db.url, "dataset", "rename", "nope", "x"])
    assert out.exit_code == 1 and "unknown dataset 'nope'; known: coco128" in out.output
    out = runner.invoke(cli, ["--database-url", db.url, "dataset", "rename", "coco128", "coco-small"])
    assert out.exit_code == 0 and sql(db, "SELECT name FROM datasets") == [("coco-small",)]
    out = runner.invoke(cli, ["--database-url", db.url, "dataset", "delete", "coco-small", "--yes"])
    assert out.exit_code == 0 and "127 images" in out.output


def test_find_and_concept_prefix_use_their_indexes(db, coco128):
    """EXPLAIN with sequential scans priced out: the statements can be served by the 0010
    indexes (on 128 rows the planner rightly prefers a scan otherwise)."""
    from visearch.resources import read_sql

    with db.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        for prefix in (True, False):  # both branches of each CASE: LIKE 'x%' and equality
            plan = "\n".join(r[0] for r in conn.execute(
                "EXPLAIN " + read_sql("housekeeping/find_images.sql"),
                {"term": "x.jpg", "pattern": "x.jpg%", "prefix": prefix, "dataset_id": None, "limit": 5}))
            assert "images_file_name_pattern" in plan and "images_external_id_pattern" in plan, plan
            assert "Seq Scan on images" not in plan, plan
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN " + read_sql("housekeeping/concepts_by_prefix.sql"), {"pattern": "per%", "limit": 5}))
        assert "concepts_tag_pattern" in plan


def test_concepts_autocomplete_models_and_tagging_selected_images(db, coco128, client):
    from visearch.ingest import ingest_coco

    ingest_coco(db, "coco128", coco128 / "train2017", coco128 / "annotations" / "instances_train2017.json",
                progress=False)
    found = client.get("/v1/concepts", params={"prefix": "#traffic l"}).json()
    assert [c["tag"] for c in found] == ["traffic_light"] and found[0]["boxes"] > 0
    most = client.get("/v1/concepts", params={"limit": 3}).json()
    assert most[0]["name"] == "person"  # most used first
    assert client.get("/v1/concepts", params={"prefix": "-#pers"}).json()[0]["tag"] == "person"
    assert client.get("/v1/models").json() == []  # none registered yet


def test_export_a_collection_as_coco_and_csv_and_remove_items(two_datasets, client, coco128, tmp_path):
    """Objects mode: the export has the collection's boxes; re-ingested, the same boxes."""
    from visearch.embed import embed_pending
    from visearch.embedding import load_model
    from visearch.ingest import ingest_coco

    db = two_datasets
    coco = _dataset_id(db, "coco128")
    # embed the boxes of one image of coco128 only
    image_id = sql(db, "SELECT id FROM images WHERE file_name = '000000000009.jpg' AND dataset_id = %s", (coco,))[0][0]
    sql(db, "DELETE FROM embedding_queue WHERE dataset_id = %s AND NOT (item_kind = 'object' AND item_id IN"
             " (SELECT id FROM annotations WHERE image_id = %s))", (coco, image_id))
    embed_pending(db, load_model("efficientnet-lite0"), progress=False)
    ann = sql(db, "SELECT id FROM annotations WHERE image_id = %s ORDER BY id LIMIT 1", (image_id,))[0][0]
    res = client.post("/v1/search", json={"annotation_id": ann, "datasets": ["coco128"], "limit": 50}).json()
    cid, boxes = res["collection_id"], len(res["items"])
    assert boxes == sql(db, "SELECT count(*) FROM annotations WHERE image_id = %s", (image_id,))[0][0]

    r = client.get(f"/v1/collections/{cid}/export", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(x["annotation_id"]) for x in rows] == [i["annotation_id"] for i in res["items"]]
    assert float(rows[0]["bbox_w"]) == res["items"][0]["bbox_xywh"][2]

    removed = client.delete(f"/v1/collections/{cid}/items", params={"rank": [2, 3]}).json()["removed"]
    assert removed == [2, 3]
    r = client.get(f"/v1/collections/{cid}/export", params={"format": "coco"})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    exported = r.json()
    assert len(exported["images"]) == 1 and len(exported["annotations"]) == boxes - 2
    assert {c["name"] for c in exported["categories"]} <= {i["concept"] for i in res["items"]}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(exported))
    report = ingest_coco(db, "re-ingested", coco128 / "train2017", path, progress=False)
    assert report.images_added == 1 and report.annotations_added == boxes - 2
    assert client.get(f"/v1/collections/{cid}/export", params={"format": "xml"}).status_code == 400
    assert client.get("/v1/collections/999999/export").status_code == 404


def test_the_console_page_is_public_and_asks_for_a_key_the_api_is_not(db, settings):
    """With API keys the page and its files load without one (the page then asks for the key
    and sends it as X-API-Key); every /v1 call still needs it."""
    keyed = settings.model_copy(update={"api_keys": ["alice:s3cret-0123456789abcdef"]})
    with TestClient(create_app(keyed, db)) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'data-api-keys-required="true"' in page.text and "s3cret" not in page.text
        assert 'src="/console/static/console.js"' in page.text and "http://" not in page.text  # offline
        assert c.get("/console/static/console.js").status_code == 200
        assert c.get("/console/static/console.css").status_code == 200
        assert c.get("/v1/datasets").status_code == 401
        assert c.get("/v1/datasets", headers={"X-API-Key": "s3cret-0123456789abcdef"}).status_code == 200
        assert c.get("/v1/concepts", headers={"X-API-Key": "s3cret-0123456789abcdef"}).json() == []
        assert "/console" not in c.get("/schema/openapi.json").text  # the page is no API


def test_captions_of_an_image(db, coco_mini, client):
    from visearch.ingest import ingest_coco

    ingest_coco(db, "mini", coco_mini / "train2017", captions_json=coco_mini / "annotations" / "captions_train2017.json",
                progress=False)
    image_id, n = sql(db, "SELECT image_id, count(*) FROM captions GROUP BY image_id ORDER BY image_id LIMIT 1")[0]
    captions = client.get(f"/v1/images/{image_id}/captions").json()
    assert len(captions) == n >= 1 and all(c["text"].strip() and c["source"] == "coco" for c in captions)
    assert client.get("/v1/images/999999/captions").status_code == 404
