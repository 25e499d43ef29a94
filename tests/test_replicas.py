"""Read replicas (visearch.db.routing) against a real streaming replica.

A primary and a hot standby are started on loopback from the embedded server's own binaries
(``pg_basebackup -R``); the HTTP API runs on the primary with the standby as its read replica.
Searches rank on the standby; a caller's own upload is read back from the primary while the
standby has not replayed it; killing the standby mid-run leaves every search answered.
"""

from __future__ import annotations

import io
import threading
import time

import psycopg
import pytest
from litestar.testing import TestClient
from PIL import Image

from pg_replica import start_replicated_pair
from synthetic_vectors import clustered_unit_vectors, load_vectors
from visearch.config import Settings
from visearch.db.database import open_database
from visearch.db.routing import ReadRouter
from visearch.http.app import create_app
from visearch.search import SearchRequest, search

IMAGES = 500
ALICE = {"X-API-Key": "alice-secret-0123456789"}
BOB = {"X-API-Key": "bob-secret-0123456789ab"}


@pytest.fixture(scope="module")
def pair():
    pair = start_replicated_pair()
    yield pair
    pair.close()


@pytest.fixture(scope="module")
def primary(pair):
    """The primary with 500 images of a synthetic 32-d model (the only active one: it serves)."""
    db = open_database(Settings(database_url=pair.primary.url))
    with db.connect() as conn:
        load_vectors(conn, clustered_unit_vectors(IMAGES, 32, clusters=20), model="synthetic-32")
    pair.wait_replayed()
    yield db
    db.close()


@pytest.fixture(scope="module")
def router(pair, primary):
    router = ReadRouter(primary, [pair.replica.url], max_lag_s=3.0, check_interval_s=0.2)
    _wait_until_fresh(pair, router)
    yield router
    router.close()


@pytest.fixture(scope="module")
def client(pair, primary, router):
    settings = Settings(database_url=pair.primary.url, api_keys=["alice:alice-secret-0123456789", "bob:bob-secret-0123456789ab"])
    with TestClient(create_app(settings, primary, read_router=router)) as c:
        yield c


def _search(client, headers=ALICE, **body):
    r = client.post("/v1/search", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_searches_rank_on_the_replica_and_equal_the_primary_s_answer(client, pair, primary, router):
    # the standby may not have replayed the fixture's load yet, though within the lag allowed
    # (READ_MAX_LAG_SECONDS): then it would answer "no vectors" (seen on a loaded machine)
    _wait_until_fresh(pair, router)
    on_primary = search(primary, SearchRequest(image_ids=[7], limit=10, exact=True))
    served, primary_served = router.replicas[0].served, router.primary_served
    res = _search(client, image_ids=[7], limit=10, exact=True)
    assert [i["image_id"] for i in res["items"]] == [h.image_id for h in on_primary.hits]
    assert [i["score"] for i in res["items"]] == pytest.approx([h.score for h in on_primary.hits], abs=1e-6)
    assert res["histogram"]["considered"] == IMAGES - 1  # every image but the query itself
    # search + histogram connections came from the standby; nothing read fell back
    assert router.replicas[0].served >= served + 2 and router.primary_served == primary_served
    # the temporary collection was written on the primary and pages from it
    page = client.get(res["next_url"], headers=ALICE)
    assert page.status_code == 200 and page.json()["items"][0]["rank"] == 11
    [status] = router.status()
    assert status["healthy"] and status["lag_s"] < 3.0


def _wait_until_fresh(pair, router, timeout: float = 30.0) -> None:
    """Until the standby has replayed what the primary had at a health check that is recent
    (background WAL, e.g. autovacuum after a load, can put the primary ahead for a moment)."""
    pair.wait_replayed()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if router.replicas[0].covers >= time.monotonic() - router.max_lag_s / 2:
            return
        time.sleep(router.check_interval_s / 2)
    raise AssertionError(f"the replica never became fresh: {router.status()}")


def test_a_caller_reads_their_own_upload_while_the_replica_lags(client, pair, primary, router, coco128):
    _wait_until_fresh(pair, router)
    with psycopg.connect(pair.replica.url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    try:
        ds = client.post("/v1/datasets", json={"name": "uploads"}, headers=ALICE).json()
        png = io.BytesIO()
        Image.open(next((coco128 / "train2017").glob("*.jpg"))).save(png, format="PNG")
        up = client.post(f"/v1/datasets/{ds['id']}/images", headers=ALICE,
                         files={"file": ("one.png", png.getvalue(), "image/png")})
        assert up.status_code == 201, up.text
        image_id = up.json()["id"]
        # Alice wrote: her reads go to the primary, which has the image.
        served = router.replicas[0].served
        r = client.get(f"/v1/images/{image_id}/thumbnail?size=64", headers=ALICE)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert router.replicas[0].served == served
        # Bob did not write: within max_lag he may read the (stale) replica, which lacks it.
        r = client.get(f"/v1/images/{image_id}/thumbnail?size=64", headers=BOB)
        assert r.status_code == 404 and router.replicas[0].served == served + 1
        # Past max_lag_s the paused replica serves nobody: everything reads the primary.
        time.sleep(router.max_lag_s + 3 * router.check_interval_s)
        assert client.get(f"/v1/images/{image_id}/thumbnail?size=64", headers=BOB).status_code == 200
        assert router.replicas[0].served == served + 1 and router.status()[0]["lag_s"] >= router.max_lag_s
    finally:
        with psycopg.connect(pair.replica.url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
    pair.wait_replayed()
    time.sleep(3 * router.check_interval_s)
    served = router.replicas[0].served
    assert client.get(f"/v1/images/{image_id}/thumbnail?size=64", headers=BOB).status_code == 200
    assert router.replicas[0].served == served + 1  # caught up: the replica serves again


def test_killing_the_replica_mid_run_loses_no_search_and_it_rejoins(client, pair, router):
    expected = [i["image_id"] for i in _search(client, image_ids=[3], limit=5, exact=True)["items"]]
    results: list = []
    errors: list = []

    def searches():
        for _ in range(30):
            try:
                r = client.post("/v1/search", json={"image_ids": [3], "limit": 5, "exact": True}, headers=BOB)
                results.append((r.status_code, [i["image_id"] for i in r.json().get("items", [])]))
            except Exception as exc:  # noqa: BLE001 - any failure is what the test reports
                errors.append(exc)

    thread = threading.Thread(target=searches)
    thread.start()
    while len(results) < 5 and thread.is_alive():
        time.sleep(0.01)
    pair.replica.kill()
    thread.join(timeout=120)
    assert not errors and len(results) == 30
    assert all(code == 200 and ids == expected for code, ids in results), results
    time.sleep(3 * router.check_interval_s)
    [status] = router.status()
    assert not status["healthy"] and status["last_error"]
    primary_served = router.primary_served
    assert _search(client, headers=BOB, image_ids=[3], limit=5)["items"][0]["image_id"] == 3
    assert router.primary_served > primary_served

    pair.replica.start()  # the standby restarts, catches up, and takes reads again
    deadline = time.monotonic() + 30
    while not router.status()[0]["healthy"] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3 * router.check_interval_s)
    served = router.replicas[0].served
    _search(client, headers=BOB, image_ids=[3], limit=5)
    assert router.replicas[0].served > served
