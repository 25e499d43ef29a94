"""Issue 11 (hardening), files: names that are not UTF-8, symlink loops and dangling links,
non-image files, media roots for reference-only images, bounded thumbnail decodes and their
cache with ETag / 304. Real files on disk, real PostgreSQL, real photos from coco128."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from litestar.testing import TestClient
from PIL import Image

from visearch import catalog
from visearch.embed import embed_pending
from visearch.errors import ForbiddenError
from visearch.http.app import create_app
from visearch.ingest import ingest_folder, path_from_source_uri
from visearch.status import collect_status

from conftest import sql
from test_freshness import effnet  # noqa: F401 (fixture)


def _photos(coco128: Path, n: int) -> list[Path]:
    return sorted((coco128 / "train2017").glob("*.jpg"))[:n]


def test_odd_names_links_and_non_images(db, coco128, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    a, b, c = _photos(coco128, 3)
    odd = os.fsdecode(b"caf\xe9-\xff.jpg")  # Latin-1 bytes: not UTF-8
    shutil.copyfile(a, folder / odd)
    shutil.copyfile(b, folder / "photo-without-extension")  # JPEG bytes: an image all the same
    (folder / "readme.txt").write_text("not an image\n")
    (folder / "data.csv").write_text("a,b\n1,2\n")
    (folder / "loop.jpg").symlink_to("loop.jpg")  # a link to itself
    (folder / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    shutil.copyfile(c, tmp_path / "real.jpg")
    (folder / "good-link.jpg").symlink_to(tmp_path / "real.jpg")

    report = ingest_folder(db, "odd", folder, progress=False, workers=2)

    assert report.images_added == 3 and report.not_images == 2
    reasons = {path_from_source_uri(s.source_uri).name: s.reason for s in report.skipped}
    assert set(reasons) == {"loop.jpg", "dangling.jpg"}
    assert reasons["loop.jpg"].startswith("symlink loop")
    assert reasons["dangling.jpg"].startswith("broken symlink") and "gone.jpg" in reasons["dangling.jpg"]
    assert "2 files that are not images" in report.summary()
    rows = dict(sql(db, "SELECT file_name, source_uri FROM images"))
    assert set(rows) == {"caf\\xe9-\\xff.jpg", "photo-without-extension", "good-link.jpg"}
    uri = rows["caf\\xe9-\\xff.jpg"]
    assert "caf%E9-%FF.jpg" in uri and path_from_source_uri(uri) == folder / odd  # lossless
    assert {r[0] for r in sql(db, "SELECT reason FROM ingest_rejects")} == set(reasons.values())


@pytest.fixture
def referenced(db, coco128, tmp_path):
    """Two coco128 photos ingested by reference (no bytes stored) from tmp/media."""
    media = tmp_path / "media"
    media.mkdir()
    for p in _photos(coco128, 2):
        shutil.copyfile(p, media / p.name)
    report = ingest_folder(db, "ref", media, store_bytes=False, progress=False, workers=1)
    assert report.images_added == 2
    return media


def test_reference_only_images_are_served_only_inside_the_media_roots(db, referenced, tmp_path, settings):
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0\n")
    (referenced / "sneaky.jpg").symlink_to(outside)  # inside the root by name only
    ds = sql(db, "SELECT id FROM datasets WHERE name = 'ref'")[0][0]
    ids = {}
    for name, uri in [("etc", "file:///etc/passwd"), ("outside", outside.as_uri()),
                      ("sneaky", (referenced / "sneaky.jpg").as_uri()),
                      ("dotdot", (referenced / ".." / "secret.txt").as_uri()), ("http", "http://example.com/x.jpg")]:
        ids[name] = sql(db, "INSERT INTO images (dataset_id, sha256, width, height, format, source_uri)"
                             " VALUES (%s, sha256(%s::bytea), 10, 10, 'JPEG', %s) RETURNING id",
                         (ds, name.encode(), uri))[0][0]
    assert [r[0] for r in sql(db, "SELECT path FROM media_roots")] == [str(referenced.resolve())]
    data, fmt = catalog.image_original(db, 1)
    assert fmt == "JPEG" and data == sorted(referenced.glob("0*.jpg"))[0].read_bytes()
    for name, image_id in ids.items():
        with pytest.raises(ForbiddenError, match="media roots"):
            catalog.image_original(db, image_id)
    with TestClient(create_app(settings.model_copy(update={"api_keys": []}), db)) as c:
        assert c.get("/v1/images/1/original").status_code == 200
        for image_id in ids.values():
            for url in (f"/v1/images/{image_id}/original", f"/v1/images/{image_id}/thumbnail"):
                r = c.get(url)
                assert r.status_code == 403 and r.json()["error"] == "forbidden", (url, r.text)
                assert "root:x" not in r.text
    # VISEARCH_MEDIA_ROOTS replaces the ingested folders
    elsewhere = settings.model_copy(update={"api_keys": [], "media_roots": [str(tmp_path / "nowhere")]})
    assert Path(elsewhere.media_roots[0]) == tmp_path / "nowhere"
    with pytest.raises(ForbiddenError):
        catalog.image_original(db, 1, media_roots=elsewhere.media_roots)
    assert catalog.image_original(db, ids["outside"], media_roots=[tmp_path])[0] == b"root:x:0:0\n"


def test_the_embedder_reads_no_file_outside_the_media_roots(db, referenced, tmp_path, effnet):
    """A reference-only row pointing outside the roots (directly, or by a symlink inside a root)
    fails with its reason and is never opened; the rest of the run is embedded."""
    outside = tmp_path / "elsewhere" / "photo.jpg"  # a real, decodable photo: reading it would work
    outside.parent.mkdir()
    shutil.copyfile(sorted(referenced.glob("*.jpg"))[0], outside)
    (referenced / "link.jpg").symlink_to(outside)  # inside the root by name only
    os.utime(outside, (0, outside.stat().st_mtime))  # atime < mtime: relatime records the next read
    ds = sql(db, "SELECT id FROM datasets WHERE name = 'ref'")[0][0]
    refused = {}
    for name, uri in [("outside", outside.as_uri()), ("link", (referenced / "link.jpg").as_uri())]:
        refused[name] = sql(db, "INSERT INTO images (dataset_id, sha256, width, height, format, source_uri)"
                                 " VALUES (%s, sha256(%s::bytea), 640, 480, 'JPEG', %s) RETURNING id",
                             (ds, name.encode(), uri))[0][0]
    box = sql(db, "INSERT INTO annotations (image_id, bbox_x, bbox_y, bbox_w, bbox_h)"
                   " VALUES (%s, 10, 10, 100, 100) RETURNING id", (refused["outside"],))[0][0]
    inside = [r[0] for r in sql(db, "SELECT id FROM images WHERE id <> ALL (%s)", (list(refused.values()),))]
    assert len(inside) == 2

    report = embed_pending(db, effnet, progress=False, num_workers=0, batch_size=2)

    assert os.stat(outside).st_atime == 0  # never opened, by the main process or a decoder
    assert {r[0] for r in sql(db, "SELECT image_id FROM image_embeddings")} == set(inside)
    assert sql(db, "SELECT count(*) FROM object_embeddings")[0][0] == 0
    failed = {(k, i): (f, e) for k, i, f, e in sql(
        db, "SELECT item_kind, item_id, failed, last_error FROM embedding_queue")}
    assert set(failed) == {("image", refused["outside"]), ("image", refused["link"]), ("object", box)}
    for given_up, reason in failed.values():  # at once: retrying cannot help until the roots change
        assert given_up and reason.startswith("outside the media roots: file://"), reason
    assert {(k, i) for k, i, _ in report.failures} == set(failed)
    # visearch status lists them under that reason
    groups = [g for g in collect_status(db).failures if g["reason"] == "outside the media roots"]
    assert sum(g["items"] for g in groups) == 3 and all(g["given_up"] for g in groups)


def test_thumbnails_have_an_etag_answer_304_and_are_cached(db, referenced, settings):
    with TestClient(create_app(settings.model_copy(update={"api_keys": []}), db)) as c:
        first = c.get("/v1/images/2/thumbnail?size=64")
        assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
        sha = sql(db, "SELECT encode(sha256, 'hex') FROM images WHERE id = 2")[0][0]
        assert first.headers["etag"] == f'"{sha}-64"'
        again = c.get("/v1/images/2/thumbnail?size=64", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == first.headers["etag"]
        other = c.get("/v1/images/2/thumbnail?size=32", headers={"If-None-Match": first.headers["etag"]})
        assert other.status_code == 200 and max(Image.open(io.BytesIO(other.content)).size) == 32
        # cached: served without the file (which is the only copy of a reference-only image)
        path = path_from_source_uri(sql(db, "SELECT source_uri FROM images WHERE id = 2")[0][0])
        path.rename(path.with_suffix(".moved"))
        cached = c.get("/v1/images/2/thumbnail?size=64")
        assert cached.status_code == 200 and cached.content == first.content
        assert c.get("/v1/images/2/original").status_code == 404
        assert c.get("/v1/images/2/thumbnail?size=128").status_code == 404


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def test_large_decodes_are_bounded(tmp_path):
    # a JPEG decodes scaled by the decoder itself: an 8000x8000 JPEG's thumbnail decodes 1000x1000
    big = io.BytesIO()
    Image.new("RGB", (8000, 8000), (10, 120, 200)).save(big, format="JPEG", quality=50)
    from visearch.embedding.decode import decode_image

    assert decode_image(big.getvalue(), max_pixels=10**8, draft=256).size == (1000, 1000)  # 1/64 of the pixels
    assert catalog.decode_bounded(big.getvalue(), max_pixels=10**8, fit=256).size == (256, 256)
    # a huge PNG cannot be decoded scaled: it waits for one of the few large-decode slots
    huge, small = _png(5000, 4000), _png(500, 400)
    done: dict[str, float] = {}

    def decode(name, data):
        catalog.decode_bounded(data, max_pixels=10**8, fit=256)
        done[name] = time.monotonic()

    for _ in range(catalog.LARGE_DECODE_SLOTS):  # every slot busy
        catalog._LARGE_DECODES.acquire()
    try:
        threads = [threading.Thread(target=decode, args=(n, d)) for n, d in (("huge", huge), ("small", small))]
        for t in threads:
            t.start()
        threads[1].join(30)
        threads[0].join(2)  # ~10x the time a 20 MP PNG takes to decode here (0.17 s), were it not waiting
        assert "small" in done and "huge" not in done and threads[0].is_alive()  # the small one never waits
    finally:
        released = time.monotonic()
        for _ in range(catalog.LARGE_DECODE_SLOTS):
            catalog._LARGE_DECODES.release()
    threads[0].join(30)
    assert done["huge"] >= released
