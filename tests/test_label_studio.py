"""Label Studio both ways, against a real Label Studio (its own virtualenv, see
visearch/integrations/label_studio/server.py) on the test PostgreSQL, driven through its REST
API (label-studio-sdk) as an annotator's browser would.

The first run on a machine builds .venv-label-studio (~3-4 min, cached by version after).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from litestar.testing import TestClient

from visearch.integrations.label_studio import LabelStudio, LabelStudioSettings
from visearch.integrations.label_studio.server import LabelStudioServer
from visearch.integrations.sync import follow, link_project, sync_project

from conftest import SHARED_DATA, ingest_coco128_embedded, shared_data

pytestmark = pytest.mark.slow

#: coco128 images annotated in Label Studio: a street (33 boxes: people, traffic lights, trucks,
#: ...), and two dogs (one box each).
IMAGES = ("000000000257.jpg", "000000000042.jpg", "000000000581.jpg")
#: Seconds within which a saved annotation's box must be in visearch's tables (the sync).
SYNC_BOUND_S = 30.0
#: Seconds within which the worker must have embedded it: generous, because CI machines shared
#: with other jobs embed a crop in seconds rather than milliseconds (bench/bench_label_studio.py
#: measures the real figures).
LIVE_BOUND_S = 600.0


@pytest.fixture(scope="module")
def label_studio(database):
    shared_data("coco128")
    with LabelStudioServer(database.url, local_files_root=SHARED_DATA, start_timeout=900) as server:
        yield server


@pytest.fixture(scope="module")
def coco_json():
    return json.loads(shared_data("coco128", "annotations", "instances_train2017.json").read_text())


@pytest.fixture
def sdk(label_studio):
    from label_studio_sdk import LabelStudio as SDK

    return SDK(base_url=label_studio.url, api_key=label_studio.token)


@pytest.fixture
def tool(label_studio):
    return LabelStudio(LabelStudioSettings(url=label_studio.url, token=label_studio.token,
                                           media_root=label_studio.media_root, local_files_root=SHARED_DATA))


def coco_boxes(coco_json, file_name):
    """(image record, [(annotation record, category name)]) of one coco128 file, crowds left out."""
    image = next(i for i in coco_json["images"] if i["file_name"] == file_name)
    names = {c["id"]: c["name"] for c in coco_json["categories"]}
    boxes = [(a, names[a["category_id"]]) for a in coco_json["annotations"]
             if a["image_id"] == image["id"] and not a["iscrowd"]]
    return image, boxes


def label_config(labels, choices=()):
    rect = "".join(f'<Label value="{n}"/>' for n in sorted(labels))
    choice = "".join(f'<Choice value="{c}"/>' for c in choices)
    choice = f'<Choices name="scene" toName="image">{choice}</Choices>' if choices else ""
    return (f'<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">{rect}'
            f'</RectangleLabels>{choice}</View>')


def rect_result(region_id, bbox, width, height, name):
    """A rectanglelabels result as Label Studio's editor saves it: percent of the original size."""
    x, y, w, h = bbox
    return {"id": region_id, "from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width,
                      "height": 100 * h / height, "rotation": 0, "rectanglelabels": [name]}}


def wait_for(predicate, timeout, what, db=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    state = ""
    if db is not None:  # what the sync and the worker had done by then
        with db.connect() as conn:
            state = (f"; boxes {conn.execute('SELECT count(*) FROM annotations').fetchone()[0]}, vectors "
                     f"{conn.execute('SELECT count(*) FROM object_embeddings').fetchone()[0]}, queue "
                     f"{conn.execute('SELECT item_kind, count(*), max(last_error) FROM embedding_queue GROUP BY 1').fetchall()}"
                     f", rejects {conn.execute('SELECT task_id, reason FROM tool_sync_rejects LIMIT 3').fetchall()}")
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{state}")


def scalar(db, query, *args):
    with db.connect() as conn:
        return conn.execute(query, args).fetchone()[0]


@pytest.fixture
def live(db, settings, tool):
    """An embedding worker and the Label Studio follower, in threads of this process."""
    from visearch.worker.scheduler import EmbeddingWorker, WorkerOptions

    worker = EmbeddingWorker(db, settings, WorkerOptions(interval=3600, batch_size=16, decode_workers=0))
    stop = threading.Event()
    ready = threading.Event()
    threads = [threading.Thread(target=worker.run, kwargs={"handle_signals": False}),
               threading.Thread(target=follow, args=(db, tool, settings), kwargs={"stop": stop, "ready": ready})]
    for t in threads:
        t.start()
    assert ready.wait(120)
    yield
    stop.set()
    worker.stop()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)


def test_annotations_saved_in_label_studio_become_searchable_boxes_and_follow_edits_and_deletes(
        db, settings, sdk, tool, coco_json, live):
    from visearch.search import SearchRequest, search

    per_image = [coco_boxes(coco_json, f) for f in IMAGES]
    labels = {name for _, boxes in per_image for _, name in boxes}
    project = sdk.projects.create(title="coco128 live", label_config=label_config(labels, ["street", "indoor"]))
    link_project(db, tool, project.id, "ls-coco")
    imported = sdk.projects.import_tasks(
        id=project.id, return_task_ids=True,
        request=[{"image": f"/data/local-files/?d=coco128/train2017/{f}"} for f in IMAGES])
    task_ids = list(imported.task_ids)
    # the import alone makes the tasks images (the follower sees the task rows)
    wait_for(lambda: scalar(db, "SELECT count(*) FROM tool_tasks WHERE project_id = %s", project.id) == 3,
             SYNC_BOUND_S, "tasks linked to images", db)

    expected = {}  # region id -> (COCO bbox, category)
    annotation_ids = []
    for task_id, (image, boxes) in zip(task_ids, per_image):
        result = [rect_result(f"coco{a['id']}", a["bbox"], image["width"], image["height"], name) for a, name in boxes]
        if image["file_name"] == IMAGES[0]:
            result.append({"id": "scene1", "from_name": "scene", "to_name": "image", "type": "choices",
                           "value": {"choices": ["street"]}})
            rotated = rect_result("rot1", [100, 100, 50, 50], image["width"], image["height"], "person")
            rotated["value"]["rotation"] = 30
            result.append(rotated)  # refused with its reason; the rest of the annotation goes in
        annotation_ids.append(sdk.annotations.create(id=task_id, result=result).id)
        expected.update({f"coco{a['id']}": (a["bbox"], name) for a, name in boxes})

    embedded = ("SELECT count(*) FROM annotations a JOIN object_embeddings e ON e.annotation_id = a.id"
                " WHERE a.source = 'label-studio'")
    wait_for(lambda: scalar(db, "SELECT count(*) FROM annotations WHERE source = 'label-studio'") == len(expected),
             SYNC_BOUND_S, f"{len(expected)} boxes synced", db)
    wait_for(lambda: scalar(db, embedded) == len(expected), LIVE_BOUND_S, f"{len(expected)} boxes embedded", db)

    # pixel coordinates equal COCO's (percent of the original size, back to pixels)
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT a.id, a.metadata ->> 'label_studio_region', k.name, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h,"
            "       d.name FROM annotations a JOIN concepts k ON k.id = a.concept_id"
            " JOIN images i ON i.id = a.image_id JOIN datasets d ON d.id = i.dataset_id"
            " WHERE a.source = 'label-studio'").fetchall()
        labels_of_first = conn.execute(
            "SELECT k.name FROM image_labels l JOIN concepts k ON k.id = l.concept_id"
            " JOIN tool_tasks t ON t.image_id = l.image_id WHERE t.task_id = %s AND l.source = 'label-studio'",
            (task_ids[0],)).fetchall()
    assert len(rows) == len(expected)
    for _id, region, name, x, y, w, h, dataset in rows:
        coco_bbox, coco_name = expected[region]
        assert name == coco_name and dataset == "ls-coco"
        assert [x, y, w, h] == pytest.approx(coco_bbox, abs=1e-6)
    assert labels_of_first == [("street",)]

    # object search by one box finds boxes of its category well above chance
    concept_of = {r[0]: r[2] for r in rows}
    counts = Counter(concept_of.values())
    query_concept = "traffic light"
    hits_same, hits_total = 0, 0
    for query_id in [i for i, c in concept_of.items() if c == query_concept]:
        result = search(db, SearchRequest(mode="objects", annotation_id=query_id, datasets=["ls-coco"], limit=6))
        others = [h for h in result.hits if h.annotation_id != query_id][:5]
        hits_same += sum(concept_of[h.annotation_id] == query_concept for h in others)
        hits_total += len(others)
    chance = (counts[query_concept] - 1) / (len(rows) - 1)
    assert hits_same / hits_total > 2 * chance, (hits_same, hits_total, chance)

    # an edit moves the box and re-embeds it
    image, boxes = per_image[1]
    first_region = f"coco{boxes[0][0]['id']}"
    box_id = next(r[0] for r in rows if r[1] == first_region)
    before = scalar(db, "SELECT embedded_at FROM object_embeddings WHERE annotation_id = %s", box_id)
    moved = [b[0]["bbox"] for b in boxes]
    moved[0] = [moved[0][0] + 5.0, moved[0][1] + 3.0, moved[0][2] * 0.5, moved[0][3] * 0.5]
    sdk.annotations.update(id=annotation_ids[1], result=[
        rect_result(f"coco{a['id']}", bbox, image["width"], image["height"], name)
        for (a, name), bbox in zip(boxes, moved)])
    wait_for(lambda: scalar(db, "SELECT embedded_at FROM object_embeddings WHERE annotation_id = %s", box_id) not in
             (None, before), LIVE_BOUND_S, "the moved box re-embedded", db)
    with db.connect() as conn:
        bbox = conn.execute("SELECT bbox_x, bbox_y, bbox_w, bbox_h FROM annotations WHERE id = %s", (box_id,)).fetchone()
    assert list(bbox) == pytest.approx(moved[0], abs=1e-6)
    assert scalar(db, "SELECT count(*) FROM annotations WHERE source = 'label-studio'") == len(expected)

    # a delete removes the boxes (and their vectors)
    sdk.annotations.delete(id=annotation_ids[2])
    gone = len(per_image[2][1])
    wait_for(lambda: scalar(db, embedded) == len(expected) - gone, LIVE_BOUND_S, "the deleted annotation's boxes gone", db)
    assert scalar(db, "SELECT count(*) FROM annotations WHERE source = 'label-studio'") == len(expected) - gone
    assert scalar(db, "SELECT count(*) FROM embedding_queue") == 0
    # only the rotated box was refused, with why
    with db.connect() as conn:
        rejects = conn.execute("SELECT task_id, reason FROM tool_sync_rejects").fetchall()
    assert rejects == [(task_ids[0], f"box {annotation_ids[0]}/rot1: rotated by 30 degrees: visearch boxes are axis-aligned")]


def test_task_files_outside_the_media_roots_and_rotated_boxes_are_refused_with_reasons(tmp_path):
    from visearch.integrations.label_studio.adapter import rect_to_coco

    tool = LabelStudio(LabelStudioSettings(media_root=tmp_path / "media", local_files_root=SHARED_DATA))
    inside = tool.resolve_file("/data/local-files/?d=coco128/train2017/000000000042.jpg")
    assert inside == (SHARED_DATA / "coco128" / "train2017" / "000000000042.jpg").resolve()
    assert tool.resolve_file((SHARED_DATA / "coco128" / "train2017" / "000000000042.jpg").as_uri()) == inside
    assert "outside the media roots" in tool.resolve_file("/data/local-files/?d=../../../etc/passwd")
    assert "outside the media roots" in tool.resolve_file("/etc/passwd")
    assert "outside the media roots" in tool.resolve_file("/data/upload/1/../../../../etc/passwd")
    assert "not fetched" in tool.resolve_file("https://example.com/cat.jpg")
    assert "no such file" in tool.resolve_file("/data/local-files/?d=coco128/missing.jpg")
    assert rect_to_coco({"x": 10, "y": 20, "width": 30, "height": 40}, 640, 480) == pytest.approx((64, 96, 192, 192))
    # a box reaching a hair past the edge (editor float noise) is clipped to the image
    assert rect_to_coco({"x": 50, "y": 0, "width": 50.0000001, "height": 100}, 640, 480) == pytest.approx((320, 0, 320, 480))
    assert "rotated by 90 degrees" in rect_to_coco({"x": 1, "y": 1, "width": 5, "height": 5, "rotation": 90}, 640, 480)
    assert rect_to_coco({"x": 1, "y": 1, "width": 5, "height": 5, "rotation": 360}, 100, 100) == pytest.approx((1, 1, 5, 5))
    assert "not a rectangle" in rect_to_coco({"x": "a"}, 640, 480)


def test_a_collection_sent_to_label_studio_becomes_tasks_with_predictions_and_annotations_come_back(
        database, settings, coco128, coco_json, sdk, tool, label_studio, monkeypatch):
    from visearch.http.app import create_app

    ingest_coco128_embedded(database, coco128, images=3, boxes_of_images=0)
    labels = {"person", "bowl", "broccoli", "giraffe", "elephant"}
    project = sdk.projects.create(title="from visearch", label_config=label_config(labels))
    for key, value in {"URL": label_studio.url, "TOKEN": label_studio.token,
                       "LOCAL_FILES_ROOT": str(SHARED_DATA)}.items():
        monkeypatch.setenv(f"VISEARCH_LABEL_STUDIO_{key}", value)
    with TestClient(create_app(settings, database)) as client:
        found = client.post("/v1/search", json={"image_ids": [1], "limit": 3}).json()
        collection = found["collection_id"]
        sent = client.post(f"/v1/collections/{collection}/label-studio", json={"project": project.id})
        assert sent.status_code == 200, sent.text
        missing = client.post(f"/v1/collections/{collection}/label-studio", json={"project": 10**6})
        assert missing.status_code == 404 and "no project" in missing.json()["detail"]
        bad = client.post(f"/v1/collections/{collection}/label-studio", json={"project": "x"})
        assert bad.status_code == 400
        assert client.post(f"/v1/collections/{collection}/save", json={"name": "street picks"}).status_code == 200
    body = sent.json()
    with database.connect() as conn:
        images = conn.execute(
            "SELECT i.id, i.file_name, i.width, i.height FROM images i WHERE i.id = ANY(%s)",
            ([h["image_id"] for h in found["items"]],)).fetchall()
    assert body["tasks_created"] == len(images) == 3 and body["linked"] is True

    # predictions are visible in Label Studio's API, at COCO's pixel positions
    boxes_by_file = {i[1]: coco_boxes(coco_json, i[1]) for i in images}
    sendable = sum(1 for _, boxes in boxes_by_file.values() for _, name in boxes if name in labels)
    assert body["predictions"] == sendable > 0
    predictions = sdk.predictions.list(project=project.id)
    results = [r for p in predictions for r in p.result]
    assert len(results) == sendable
    tasks = {t.id: t for t in sdk.tasks.list(project=project.id)}
    assert set(tasks) == set(body["task_ids"])
    task_image = {t.id: t.data["visearch_image_id"] for t in tasks.values()}
    size = {i[0]: (i[2], i[3]) for i in images}
    coco_pixels = sorted(tuple(round(v, 6) for v in a["bbox"]) for _, boxes in boxes_by_file.values()
                         for a, name in boxes if name in labels)
    sent_pixels = []
    for p in predictions:
        w, h = size[task_image[p.task]]
        for r in p.result:
            v = r["value"]
            sent_pixels.append(tuple(round(c, 6) for c in (v["x"] * w / 100, v["y"] * h / 100,
                                                          v["width"] * w / 100, v["height"] * h / 100)))
    assert sorted(sent_pixels) == coco_pixels

    # the link back: an annotation on a sent task lands on the image it was made from
    task_id, image_id = next(iter(task_image.items()))
    assert scalar(database, "SELECT image_id FROM tool_tasks WHERE task_id = %s", task_id) == image_id
    w, h = size[image_id]
    sdk.annotations.create(id=task_id, result=[rect_result("new1", [10, 20, 30, 40], w, h, "person")])
    report = sync_project(database, tool, project.id, settings)
    assert report.boxes_added == 1 and report.images_added == 0
    with database.connect() as conn:
        row = conn.execute("SELECT image_id, bbox_x, bbox_y, bbox_w, bbox_h FROM annotations"
                           " WHERE source = 'label-studio'").fetchone()
    assert row[0] == image_id and list(row[1:]) == pytest.approx([10, 20, 30, 40], abs=1e-6)

    # the same from the command line: a saved collection by name, then a one-off sync
    cli_project = sdk.projects.create(title="from the cli", label_config=label_config(labels))
    out = run_cli(["collections", "send", "street picks", "--label-studio-project", str(cli_project.id),
                   "--url", label_studio.url, "--token", label_studio.token, "--local-files-root", str(SHARED_DATA)],
                  database)
    # the box that came back from Label Studio above is now one of its image's boxes: sent too
    assert f"3 tasks created in Label Studio project {cli_project.id} with {sendable + 1} predicted boxes" in out
    assert "linked: annotations come back" in out
    assert len(list(sdk.tasks.list(project=cli_project.id))) == 3
    out = run_cli(["connect", "label-studio", "--project", str(cli_project.id), "--once",
                   "--local-files-root", str(SHARED_DATA)], database)
    assert f"label-studio project {cli_project.id} -> dataset 'label-studio-{cli_project.id}': 3 tasks" in out


def run_cli(args, database):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISEARCH_")}
    env["VISEARCH_DATABASE_URL"] = database.url
    proc = subprocess.run([sys.executable, "-m", "visearch", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
