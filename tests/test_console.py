"""The web console end to end in a real browser: Debian's chromium driven by Playwright, against
the real app served by uvicorn on 127.0.0.1 (a free port), a real PostgreSQL, coco128 embedded
with efficientnet-lite0. No mocks: the page calls the same /v1 API as any script.

One module-scoped server and browser; the tests run in file order and build on each other (a
search, then its collection saved, tagged, exported and re-ingested, then that dataset embedded
from the page and disabled). Each test saves a screenshot under its pytest tmp dir and fails on
any console error or uncaught exception in the page. With VISEARCH_WRITE_DOCS_SCREENSHOT=1 the
first search also writes docs/console.png (the README's screenshot).
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from conftest import sql
from test_http import OBJECT_IMAGES, coco  # noqa: F401 (fixture: coco128 embedded, boxes of 1..12)

from playwright import sync_api as playwright_api

CHROMIUM = os.environ.get("VISEARCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
DOCS_PNG = Path(__file__).resolve().parents[1] / "docs" / "console.png"
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def server(coco, settings):
    """The app on uvicorn in a thread, on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    from visearch.http.app import create_app

    app = create_app(settings.model_copy(update={"api_keys": []}), coco)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: apt-get install -y chromium (CI: .ci/run does)")
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 800}, accept_downloads=True,
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def page(browser_context, server):
    """One page for the module; console errors and page exceptions are collected."""
    pg = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.set_default_timeout(WAIT_MS)
    pg.goto(server + "/")
    pg.wait_for_selector("body[data-ready=true]")
    return pg


@pytest.fixture
def shot(page, tmp_path):
    """Screenshot at the end of each test; the page must have logged no error."""
    yield
    page.screenshot(path=str(tmp_path / "console.png"))
    errors, page.errors[:] = list(page.errors), []
    assert not errors, f"console errors: {errors}"


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server, timeout=120) as client:
        yield client


def _shown(page) -> int:
    return int(page.get_attribute("#grid", "data-shown") or 0)


def _wait_for_results(page, shown_before: int) -> str:
    """Wait until results newer than the ``shown_before``-th are on the page, all loaded."""
    page.wait_for_function(
        "n => { const g = document.querySelector('#grid');"
        " return +(g.dataset.shown || 0) > n && g.dataset.complete === 'true'; }", arg=shown_before)
    return page.text_content("#summary")


def _cards(page) -> list[dict]:
    return page.eval_on_selector_all(".card", "cs => cs.map(c => ({rank: +c.dataset.rank,"
                                     " image: +c.dataset.imageId, annotation: c.dataset.annotationId ? +c.dataset.annotationId : null,"
                                     " score: +c.dataset.score}))")


def _collection_id(page) -> int:
    return page.evaluate("Console.state.result.collection_id")


def _write_docs_screenshot(page) -> None:
    """docs/console.png: the page 1280 wide as this test left it (a drawn box, its objects)."""
    page.set_viewport_size({"width": 1280, "height": 1040})  # tall enough to show the grid
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_function("() => [...document.querySelectorAll('.card img')].slice(0, 12).every(i => i.complete)")
    img = Image.open(io.BytesIO(page.screenshot(type="png"))).convert("RGB")
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    if out.tell() >= 300_000:  # photos: 256 colours, dithered, keep it small
        out = io.BytesIO()
        img.quantize(colors=256, dither=Image.Dither.FLOYDSTEINBERG).save(out, format="PNG", optimize=True)
    assert out.tell() < 300_000
    DOCS_PNG.parent.mkdir(exist_ok=True)
    DOCS_PNG.write_bytes(out.getvalue())
    page.set_viewport_size({"width": 1280, "height": 800})


def test_page_lists_the_datasets_with_their_state_and_the_model(page, shot):
    page.wait_for_selector("li[data-dataset=coco128]")
    state = page.text_content("li[data-dataset=coco128] .dataset-state")
    # object boxes of images 13.. were never queued: embedded counts what has vectors
    assert "embedded" in state or "being prepared" in state
    assert "128 images" in page.text_content("li[data-dataset=coco128]")
    assert "efficientnet-lite0" in page.text_content("#model")
    assert "image-only" in page.text_content("#model-note")
    # accessible basics: every image has alt text, the tabs are a tablist
    assert page.locator("[role=tab]").count() >= 3
    # a narrow window: one column, nothing wider than the window
    page.set_viewport_size({"width": 420, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.set_viewport_size({"width": 1280, "height": 800})


def test_upload_a_photo_draw_a_box_and_find_that_box_first(page, shot, api, coco, coco128):
    ann_id, image_id, x, y, w, h, file_name = sql(coco, (
        "SELECT a.id, a.image_id, a.bbox_x, a.bbox_y, a.bbox_w, a.bbox_h, i.file_name FROM annotations a"
        " JOIN images i ON i.id = a.image_id WHERE a.image_id <= %s AND a.bbox_w > 120 AND a.bbox_h > 120"
        " ORDER BY a.bbox_w * a.bbox_h LIMIT 1"), (OBJECT_IMAGES,))[0]
    page.set_input_files("#file", str(coco128 / "train2017" / file_name))
    page.wait_for_function("() => document.querySelector('#query-image').naturalWidth > 0")
    box = page.locator("#query-image").bounding_box()
    natural = page.evaluate("() => document.querySelector('#query-image').naturalWidth")
    s = box["width"] / natural
    page.mouse.move(box["x"] + x * s, box["y"] + y * s)
    page.mouse.down()
    page.mouse.move(box["x"] + (x + w / 2) * s, box["y"] + (y + h / 2) * s, steps=4)
    page.mouse.move(box["x"] + (x + w) * s, box["y"] + (y + h) * s, steps=4)
    page.mouse.up()
    drawn = [float(page.input_value(f"#crop-{k}")) for k in "xywh"]
    assert all(abs(a - b) <= 2 / s + 1 for a, b in zip(drawn, (x, y, w, h))), (drawn, (x, y, w, h))
    assert page.is_checked("input[name=mode][value=objects]")  # a box means objects
    before = _shown(page)
    with page.expect_response("**/v1/search") as resp:
        page.click("#search-button")
    res = resp.value.json()
    assert res["query_source"] == "image" and res["mode"] == "objects"
    assert res["collection_id"] == api.get("/v1/collections", params={"saved": False}).json()[0]["id"]
    _wait_for_results(page, before)
    first = _cards(page)[0]
    assert first["annotation"] == ann_id and first["image"] == image_id and first["score"] > 0.98
    page.wait_for_function("() => document.querySelector('.card img').complete")
    if os.environ.get("VISEARCH_WRITE_DOCS_SCREENSHOT"):
        _write_docs_screenshot(page)
    page.click("#query-clear")


def test_the_slider_shrinks_the_grid_to_exactly_the_apis_count_in_the_band(page, shot, api):
    before = _shown(page)
    page.evaluate("location.hash = '#image_ids=7&mode=images'")
    _wait_for_results(page, before)
    assert len(_cards(page)) == 128  # every candidate is kept (depth 1000): the grid shows all
    # drag the low handle from the left end to the middle of the track
    page.locator("#band-lo").scroll_into_view_if_needed()
    track = page.locator("#band-lo").bounding_box()
    y = track["y"] + track["height"] / 2
    page.mouse.move(track["x"] + 7, y)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * 0.55, y, steps=8)
    page.mouse.up()
    lo, hi = int(page.input_value("#band-lo")), int(page.input_value("#band-hi"))
    assert 0 < lo < hi == 20
    # the same search through the bare API: its histogram's count in that band
    res = api.post("/v1/search", json={"image_ids": [7], "mode": "images", "limit": 1, "histogram_bins": 20}).json()
    expected = sum(res["histogram"]["counts"][lo:hi])
    cards = _cards(page)
    assert len(cards) == expected == int(page.get_attribute("#band-caption", "data-count"))
    assert 0 < expected < 128
    edge = res["histogram"]["edges"][lo]
    assert all(c["score"] >= edge - 1e-9 for c in cards)
    # the limit field: at most that many, in rank order
    page.fill("#show-limit", "3")
    assert [c["rank"] for c in _cards(page)] == [c["rank"] for c in cards[:3]]
    page.fill("#show-limit", "1000")
    page.click("#band-all")
    assert len(_cards(page)) == 128


def test_select_three_results_and_search_more_like_these(page, shot):
    picked = _cards(page)[1:4]
    for c in picked:
        page.check(f".card[data-rank='{c['rank']}'] input[type=checkbox]")
    assert page.text_content("#selection-count") == "3 selected"
    before = _shown(page)
    with page.expect_request("**/v1/search") as req:
        page.click("#more-like-these")
    body = json.loads(req.value.post_data)
    assert sorted(body["image_ids"]) == sorted(c["image"] for c in picked)
    _wait_for_results(page, before)
    top = {c["image"] for c in _cards(page)[:10]}
    assert len(top & {c["image"] for c in picked}) >= 2  # the mean of the three is near them
    # keyboard: arrows move the focus through the grid, Space selects
    page.focus(".card[tabindex='0']")
    page.keyboard.press("ArrowRight")
    page.keyboard.press(" ")
    assert page.text_content("#selection-count") == "1 selected"
    page.click("#select-none")


def test_detail_view_shows_boxes_and_a_click_on_a_box_searches_by_it(page, shot, coco):
    image_id = 3  # its boxes are embedded (images 1..12)
    boxes = [r[0] for r in sql(coco, "SELECT id FROM annotations WHERE image_id = %s"
                                      " ORDER BY bbox_w * bbox_h, id", (image_id,))]  # smallest first: on top
    page.evaluate(f"location.hash = '#image={image_id}'")
    page.wait_for_selector("#detail[open]")
    assert page.locator("#detail-boxes rect").count() == len(boxes)
    assert page.text_content("#detail-captions") == "none"  # coco128 has no captions
    assert "#" in page.text_content("#detail-labels") or page.text_content("#detail-labels") == "none"
    assert page.get_attribute("#detail-image", "alt")
    before = _shown(page)
    page.click(f"#detail-boxes rect[data-annotation-id='{boxes[0]}']")
    _wait_for_results(page, before)
    first = _cards(page)[0]
    assert first["annotation"] == boxes[0] and first["score"] > 0.999


def test_concept_autocomplete_and_a_concept_search_with_an_exclusion(page, shot, coco):
    page.evaluate("location.hash = ''")
    page.fill("#query-text", "")
    page.type("#query-text", "#pers")
    page.wait_for_selector("#suggestions li[data-tag=person]")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    assert page.input_value("#query-text") == "#person "
    page.type("#query-text", "-#ca")
    page.wait_for_selector("#suggestions li[data-tag=car]")
    page.click("#suggestions li[data-tag=car]")
    page.check("input[name=mode][value=images]")
    before = _shown(page)
    with page.expect_request("**/v1/search") as req:
        page.click("#search-button")
    body = json.loads(req.value.post_data)
    assert body["query"] == "#person" and body["exclude_concepts"] == ["car"]
    _wait_for_results(page, before)
    shown = {c["image"] for c in _cards(page)}
    expected = {r[0] for r in sql(coco, (
        "SELECT DISTINCT a.image_id FROM annotations a JOIN concepts k ON k.id = a.concept_id WHERE k.name = 'person'"
        " EXCEPT SELECT a.image_id FROM annotations a JOIN concepts k ON k.id = a.concept_id WHERE k.name = 'car'"))}
    assert shown == expected
    page.fill("#query-text", "")
    # back to the ranking the next test saves
    before = _shown(page)
    page.evaluate("location.hash = '#image_ids=7&mode=images'")
    _wait_for_results(page, before)


def test_save_tag_export_coco_and_reingest_it(page, shot, api, coco, coco128, tmp_path):
    from visearch.ingest import ingest_coco

    cid = _collection_id(page)
    page.fill("#save-name", "console favourites")
    page.click("#save-collection")
    page.wait_for_function("() => document.querySelector('#action-message').textContent.startsWith('saved')")
    saved = api.get("/v1/collections", params={"saved": True}).json()
    assert [(c["id"], c["name"]) for c in saved] == [(cid, "console favourites")]
    # tag the first 5 shown (selected), then all
    ranks = [c["rank"] for c in _cards(page)[:5]]
    for r in ranks:
        page.check(f".card[data-rank='{r}'] input[type=checkbox]")
    page.fill("#tag-concept", "console pick")
    page.click("#tag-selected")
    page.wait_for_function("() => document.querySelector('#action-message').textContent.startsWith('tagged')")
    tagged = sql(coco, "SELECT count(*) FROM image_labels l JOIN concepts k ON k.id = l.concept_id"
                        " WHERE k.name = 'console pick' AND l.source = 'collection'")[0][0]
    assert tagged == 5
    page.click("#select-none")
    page.fill("#tag-concept", "console reviewed")
    page.click("#tag-all")
    page.wait_for_function("() => document.querySelector('#action-message').textContent.includes('reviewed')")
    images = api.get(f"/v1/collections/{cid}").json()["collection"]["images"]
    assert sql(coco, "SELECT count(*) FROM image_labels l JOIN concepts k ON k.id = l.concept_id"
                      " WHERE k.name = 'console reviewed'")[0][0] == images == 128
    # remove three selected items from the collection; the others keep their ranks
    gone = [c["rank"] for c in _cards(page)[-3:]]
    for r in gone:
        page.check(f".card[data-rank='{r}'] input[type=checkbox]")
    page.click("#remove-selected")
    page.wait_for_function("() => document.querySelector('#action-message').textContent.startsWith('removed')")
    keep = 128 - 3
    assert len(_cards(page)) == keep and not {c["rank"] for c in _cards(page)} & set(gone)
    assert api.get(f"/v1/collections/{cid}", params={"limit": 1000}).json()["total"] == keep
    with page.expect_download() as dl:
        page.click("#export-coco")
    path = tmp_path / "export.json"
    dl.value.save_as(path)
    exported = json.loads(path.read_text())
    assert len(exported["images"]) == keep and exported["categories"]
    boxes = sql(coco, "SELECT count(*) FROM annotations WHERE image_id = ANY(%s)",
                 ([im["id"] for im in exported["images"]],))[0][0]
    assert len(exported["annotations"]) == boxes
    with page.expect_download() as dl:
        page.click("#export-csv")
    csv_path = tmp_path / "export.csv"
    dl.value.save_as(csv_path)
    assert len(csv_path.read_text().strip().splitlines()) == keep + 1
    # re-ingest the export into a new dataset, from the original files
    report = ingest_coco(coco, "coco-export", coco128 / "train2017", path, progress=False)
    assert report.images_added == keep and report.annotations_added == boxes


def test_update_a_dataset_from_the_page_then_disable_it_and_it_leaves_the_results(page, shot, coco):
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    row = "li[data-dataset=coco-export]"
    page.wait_for_selector(row)
    assert "being prepared" in page.text_content(f"{row} .dataset-state")
    # keep the test fast: embed the images only (the boxes' queue rows go, as in conftest)
    sql(coco, "DELETE FROM embedding_queue q USING datasets d WHERE d.id = q.dataset_id"
               " AND d.name = 'coco-export' AND q.item_kind = 'object'")
    page.click(f"{row} >> text=Update")
    page.wait_for_function("s => document.querySelector(s + ' .dataset-state').textContent.includes('embedded')",
                           arg=row, timeout=240_000)
    exported = {r[0] for r in sql(coco, "SELECT i.id FROM images i JOIN datasets d ON d.id = i.dataset_id"
                                         " WHERE d.name = 'coco-export'")}
    probe = min(exported)
    before = _shown(page)
    page.evaluate(f"location.hash = '#image_ids={probe}&mode=images'")
    _wait_for_results(page, before)
    assert {c["image"] for c in _cards(page)} & exported
    page.click(f"{row} >> text=Disable")
    page.wait_for_function("s => document.querySelector(s).classList.contains('off')", arg=row)
    # the probe is in the disabled dataset: search by an image of coco128 with the same bytes
    twin = sql(coco, "SELECT o.id FROM images o JOIN images e ON e.sha256 = o.sha256"
                      " JOIN datasets d ON d.id = o.dataset_id WHERE e.id = %s AND d.name = 'coco128'", (probe,))[0][0]
    before = _shown(page)
    page.evaluate(f"location.hash = '#image_ids={twin}&mode=images'")
    _wait_for_results(page, before)
    cards = _cards(page)
    assert len(cards) == 128 and not {c["image"] for c in cards} & exported
