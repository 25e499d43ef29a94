"""Freshness without a worker process: staleness triggers (any client, plain SQL), failures with
retries, dataset enable/disable, coverage notes on search, the model switch, status and CLI.

Real database (fixtures in conftest.py), real COCO photos, the pretrained efficientnet-lite0 and
a tiny randomly initialised open_clip model (the second model of the switch).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from visearch.embed import embed_pending
from visearch.embedding import load_model
from visearch.errors import InvalidRequestError
from visearch.search import SearchRequest, search
from visearch.admin import add_model, dataset_by_name, list_models, set_search_enabled
from visearch.status import collect_status, format_status

from conftest import save_tiny_openclip, shared_data

# ------------------------------------------------------------------ helpers (also used by test_worker)


def coco_files(n: int, start: int = 0) -> list[Path]:
    """``n`` coco128 photos (~640x480 JPEG), in a fixed order."""
    files = sorted(shared_data("coco128", "train2017").glob("*.jpg"))
    assert len(files) >= start + n
    return files[start : start + n]


def add_dataset(conn, name: str = "d") -> int:
    return conn.execute("INSERT INTO datasets (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]


def add_image(conn, dataset_id: int, path: Path | None = None, *, data: bytes | None = None,
              size: tuple[int, int] | None = None, with_content: bool = True) -> int:
    """Insert an image (and its bytes) the way any other tool would: plain SQL."""
    data = data if data is not None else path.read_bytes()
    if size is None:
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
    image_id = conn.execute(
        "INSERT INTO images (dataset_id, sha256, width, height, format, file_name)"
        " VALUES (%s, %s, %s, %s, 'JPEG', %s) RETURNING id",
        (dataset_id, hashlib.sha256(data).digest(), size[0], size[1], path.name if path else None),
    ).fetchone()[0]
    if with_content:
        conn.execute("INSERT INTO image_content (image_id, content) VALUES (%s, %s)", (image_id, data))
    return image_id


def add_box(conn, image_id: int, x: float, y: float, w: float, h: float) -> int:
    return conn.execute(
        "INSERT INTO annotations (image_id, bbox_x, bbox_y, bbox_w, bbox_h) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING id",
        (image_id, x, y, w, h),
    ).fetchone()[0]


def queued(conn) -> list[tuple[str, str, int]]:
    return conn.execute(
        "SELECT m.name, q.item_kind, q.item_id FROM embedding_queue q"
        " JOIN embedding_models m ON m.id = q.model_id ORDER BY 1, 2, 3"
    ).fetchall()


def vectors(conn, model: str | None = None) -> dict[tuple[str, int], object]:
    """(kind, id) -> embedded_at of every vector (of one model, or all)."""
    rows = conn.execute(
        "SELECT 'image', e.image_id, e.embedded_at FROM image_embeddings e"
        " JOIN embedding_models m ON m.id = e.model_id WHERE %(m)s::text IS NULL OR m.name = %(m)s"
        " UNION ALL SELECT 'object', e.annotation_id, e.embedded_at FROM object_embeddings e"
        " JOIN embedding_models m ON m.id = e.model_id WHERE %(m)s::text IS NULL OR m.name = %(m)s",
        {"m": model},
    ).fetchall()
    return {(k, i): t for k, i, t in rows}


def fake_model(conn, name: str, *, active: bool = True) -> int:
    return conn.execute(
        "INSERT INTO embedding_models (name, dim, embeds_text, is_active) VALUES (%s, 3, false, %s) RETURNING id",
        (name, active),
    ).fetchone()[0]


class StopAfter:
    """A ``stop`` for embed_pending that stops after ``n`` batches (a run cut short)."""

    def __init__(self, n: int):
        self.n, self.event = n, threading.Event()

    def on_batch(self, items, seconds):
        self.n -= 1
        if self.n <= 0:
            self.event.set()


@pytest.fixture(scope="module")
def effnet():
    return load_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def tiny_clip_spec(tmp_path_factory) -> str:
    """A tiny randomly initialised open_clip model saved as a checkpoint: the 'new' model."""
    arch, checkpoint, _ = save_tiny_openclip(tmp_path_factory, "visearch-fresh")
    return f"openclip:{arch}/{checkpoint}"


def drain(db, model, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("num_workers", 0)
    kw.setdefault("batch_size", 8)
    return embed_pending(db, model, **kw)


# ------------------------------------------------------------------ staleness, by plain SQL


def test_any_client_write_marks_items_stale_in_its_own_transaction(db):
    """Triggers: new/changed content or box -> queued for every active model, atomically with
    the write; metadata-only changes -> nothing; deletes -> vectors and queue rows gone."""
    img1, img2 = coco_files(2)
    with db.connect() as conn:
        fake_model(conn, "a")
        fake_model(conn, "b")
        fake_model(conn, "off", active=False)
        conn.commit()
        ds = add_dataset(conn)
        image_id = add_image(conn, ds, img1)
        box = add_box(conn, image_id, 10, 20, 100, 80)
        with db.connect() as other:  # not visible before commit: stale together with the write
            assert queued(other) == []
        conn.commit()
        assert queued(conn) == [("a", "image", image_id), ("a", "object", box),
                                ("b", "image", image_id), ("b", "object", box)]
        # the same image inserted with its bytes in one transaction is queued once, untried
        assert conn.execute("SELECT max(attempts) FROM embedding_queue").fetchone()[0] == 0

        conn.execute("DELETE FROM embedding_queue")
        concept = conn.execute("INSERT INTO concepts (name) VALUES ('dog') RETURNING id").fetchone()[0]
        conn.execute("UPDATE images SET metadata = '{\"k\": 1}', file_name = 'x.jpg', external_id = 'e'"
                     " WHERE id = %s", (image_id,))
        conn.execute("UPDATE annotations SET concept_id = %s, iscrowd = true, metadata = '{\"z\": 2}',"
                     " score = 0.5 WHERE id = %s", (concept, box))
        conn.execute("INSERT INTO image_labels (image_id, concept_id) VALUES (%s, %s)", (image_id, concept))
        conn.execute("INSERT INTO captions (image_id, text) VALUES (%s, 'a dog')", (image_id,))
        conn.execute("UPDATE datasets SET description = 'renamed', name = 'd2' WHERE id = %s", (ds,))
        assert queued(conn) == []  # metadata only: nothing to re-embed

        conn.execute("UPDATE annotations SET bbox_w = 120 WHERE id = %s", (box,))
        assert queued(conn) == [("a", "object", box), ("b", "object", box)]
        conn.execute("DELETE FROM embedding_queue")
        conn.execute("UPDATE image_content SET content = %s WHERE image_id = %s", (img2.read_bytes(), image_id))
        assert queued(conn) == [("a", "image", image_id), ("a", "object", box),
                                ("b", "image", image_id), ("b", "object", box)]
        conn.commit()

        # bytes arriving in a later transaction than their image row (0002): queued again
        late = add_image(conn, ds, img2, with_content=False)
        conn.commit()
        conn.execute("UPDATE embedding_queue SET attempts = 1, last_error = 'cannot read : no bytes'"
                     " WHERE item_id = %s AND item_kind = 'image'", (late,))
        conn.commit()
        conn.execute("INSERT INTO image_content (image_id, content) VALUES (%s, %s)", (late, img2.read_bytes()))
        conn.commit()
        rows = conn.execute("SELECT attempts, last_error FROM embedding_queue WHERE item_kind = 'image'"
                            " AND item_id = %s", (late,)).fetchall()
        assert rows == [(0, None), (0, None)]  # a fresh start for both models

        # deleting an item deletes its vectors and its queue rows
        model_a = conn.execute("SELECT id FROM embedding_models WHERE name = 'a'").fetchone()[0]
        conn.execute("INSERT INTO object_embeddings (model_id, annotation_id, embedding) VALUES (%s, %s, '[1,0,0]')",
                     (model_a, box))
        conn.execute("INSERT INTO image_embeddings (model_id, image_id, embedding) VALUES (%s, %s, '[0,1,0]')",
                     (model_a, image_id))
        conn.commit()
        conn.execute("DELETE FROM annotations WHERE id = %s", (box,))
        assert ("object", box) not in vectors(conn)
        assert all(k != "object" for _, k, _ in queued(conn))
        conn.execute("DELETE FROM images WHERE id = %s", (image_id,))
        assert vectors(conn) == {}
        assert [i for _, _, i in queued(conn)] == [late, late]
        conn.commit()


def test_enabling_a_dataset_and_queueing_notify_the_workers(db):
    with db.connect(autocommit=True) as listener, db.connect() as writer:
        listener.execute("LISTEN visearch_embedding_queue")
        ds = add_dataset(writer)
        writer.commit()
        writer.execute("UPDATE datasets SET search_enabled = false WHERE id = %s", (ds,))
        writer.commit()
        assert list(listener.notifies(timeout=0.5)) == []  # disabling wakes nobody
        writer.execute("UPDATE datasets SET search_enabled = true WHERE id = %s", (ds,))
        writer.commit()
        assert len(list(listener.notifies(timeout=5, stop_after=1))) == 1


# ------------------------------------------------------------------ failures


def test_poisoned_items_are_recorded_with_reason_and_never_block_the_queue(db, effnet):
    """A corrupt image and a box the crop rejects fail max_attempts times, then are marked
    failed with their reason; every good item is embedded; status groups the failures."""
    *good, spare = coco_files(4)
    with db.connect() as conn:
        ds = add_dataset(conn)
        good_ids = [add_image(conn, ds, p) for p in good]
        good_box = add_box(conn, good_ids[0], 10, 10, 200, 150)
        data = bytearray(good[0].read_bytes())
        data[200:] = bytes(len(data) - 200)  # header intact, entropy-coded data zeroed -> garbage
        corrupt = add_image(conn, ds, data=bytes(data) + b"x", size=(640, 480))
        # the row says 5000x5000 (so the database accepts the box), the pixels are 640x480:
        # the box lies outside the real image and the crop rejects it
        liar = add_image(conn, ds, spare, size=(5000, 5000))
        bad_box = add_box(conn, liar, 3000, 3000, 100, 100)
        conn.commit()

    report = drain(db, effnet, max_attempts=2, backoff_seconds=0)

    with db.connect() as conn:
        failed = conn.execute(
            "SELECT item_kind, item_id, attempts, failed, last_error FROM embedding_queue ORDER BY 1, 2"
        ).fetchall()
        have = vectors(conn)
    assert [(k, i, a, f) for k, i, a, f, _ in failed] == [
        ("image", corrupt, 2, True), ("object", bad_box, 2, True)]
    reasons = {k: e for k, _, _, _, e in failed}
    assert reasons["image"].startswith("undecodable image")
    assert reasons["object"].startswith("bad box") and "outside the image" in reasons["object"]
    assert set(have) == {("image", i) for i in good_ids} | {("image", liar), ("object", good_box)}
    assert report.total_embedded == 5 and len(report.failures) == 4  # 2 items x 2 attempts

    status = collect_status(db)
    (row,) = status.datasets
    assert (row["items"], row["embedded"], row["stale"], row["failed"], row["covered"]) == (7, 5, 0, 2, True)
    groups = {(f["item_kind"], f["reason"]): f for f in status.failures}
    assert groups[("object", "bad box")]["items"] == 1 and groups[("object", "bad box")]["given_up"]
    assert any(k == "image" and r.startswith("undecodable image") for k, r in groups)
    text = format_status(status)
    assert "bad box" in text and "given up" in text

    # failed items do not block search; the note says some could not be embedded
    result = search(db, SearchRequest(image_ids=[good_ids[0]], limit=10))
    assert result.coverage.total == 5 and result.coverage.ready == 4 and result.coverage.failed == 1
    assert "4 of 5 images can be searched" in result.note and "1 failed" in result.note
    # ... only when the page is short: a full page does not count the dataset nor carry the note
    full = search(db, SearchRequest(image_ids=[good_ids[0]], limit=3))
    assert len(full.hits) == 3 and full.coverage is None and full.note is None

    # fixing the bytes (any client) queues the item afresh and it is embedded
    with db.connect() as conn:
        conn.execute("UPDATE image_content SET content = %s WHERE image_id = %s", (good[2].read_bytes(), corrupt))
        conn.commit()
    drain(db, effnet, max_attempts=2, backoff_seconds=0)
    with db.connect() as conn:
        assert ("image", corrupt) in vectors(conn)
        assert [r[1] for r in queued(conn)] == ["object"]


def test_retries_back_off(db, effnet):
    """After a failed attempt an item is not claimed again before its backoff ends."""
    with db.connect() as conn:
        ds = add_dataset(conn)
        bad = add_image(conn, ds, data=b"\xff\xd8\xff not a jpeg at all", size=(10, 10))
        conn.commit()
    drain(db, effnet, max_attempts=3, backoff_seconds=3600)
    with db.connect() as conn:
        row = conn.execute("SELECT attempts, failed, not_before > now() + interval '50 min',"
                           " claimed_by FROM embedding_queue WHERE item_id = %s", (bad,)).fetchone()
    assert row == (1, False, True, None)
    report = drain(db, effnet, max_attempts=3, backoff_seconds=3600)
    assert report.failures == [] and report.remaining == 1  # still waiting, not retried early
    status = collect_status(db)
    assert status.failures[0]["given_up"] is False and status.datasets[0]["retrying"] == 1


# ------------------------------------------------------------------ enable / disable


def test_disable_keeps_vectors_and_enable_embeds_only_what_changed(db, effnet):
    files = coco_files(4)
    with db.connect() as conn:
        ds = add_dataset(conn, "photos")
        ids = [add_image(conn, ds, p) for p in files[:3]]
        box = add_box(conn, ids[0], 50, 50, 200, 200)
        other = add_box(conn, ids[1], 0, 0, 100, 100)
        conn.commit()
    drain(db, effnet)
    with db.connect() as conn:
        before = vectors(conn)
    assert len(before) == 5

    assert set_search_enabled(db, dataset_by_name(db, "photos").id, False)[1]
    with pytest.raises(InvalidRequestError, match="disabled"):
        search(db, SearchRequest(image_ids=[ids[0]], datasets=["photos"]))
    with db.connect() as conn:
        new_image = add_image(conn, ds, files[3])
        conn.execute("UPDATE annotations SET bbox_x = 60 WHERE id = %s", (box,))
        conn.execute("UPDATE annotations SET metadata = '{\"reviewed\": true}' WHERE id = %s", (other,))
        conn.execute("UPDATE images SET metadata = '{\"reviewed\": true}' WHERE id = %s", (ids[2],))
        conn.commit()
    report = drain(db, effnet)
    assert report.total_embedded == 0 and report.remaining == 0  # disabled: not embedded
    with db.connect() as conn:
        assert vectors(conn) == before  # ...and nothing deleted
        assert len(queued(conn)) == 2  # ...but the changes are remembered

    assert set_search_enabled(db, dataset_by_name(db, "photos").id, True)[1]
    report = drain(db, effnet)
    assert report.embedded == {"image": 1, "object": 1}  # exactly the new image and the moved box
    with db.connect() as conn:
        after = vectors(conn)
    assert set(after) == set(before) | {("image", new_image)}
    assert after[("object", box)] > before[("object", box)]
    unchanged = set(before) - {("object", box)}
    assert all(after[k] == before[k] for k in unchanged)  # metadata-only changes kept their vector
    result = search(db, SearchRequest(image_ids=[new_image], datasets=["photos"], limit=4))
    assert result.coverage is None and [h.image_id for h in result.hits][0] == new_image
    assert len(result.hits) == 4


# ------------------------------------------------------------------ coverage and the model switch


def test_search_on_a_dataset_being_prepared_says_how_much_is_ready(db, effnet):
    with db.connect() as conn:
        ds = add_dataset(conn, "fresh")
        ids = [add_image(conn, ds, p) for p in coco_files(4, start=10)]
        conn.commit()
    cut = StopAfter(1)
    drain(db, effnet, batch_size=2, claim_size=2, stop=cut.event, on_batch=cut.on_batch)
    with db.connect() as conn:
        done = [i for k, i in vectors(conn)]
    assert len(done) == 2

    result = search(db, SearchRequest(image_ids=[done[0]], limit=10))
    cov = result.coverage
    assert (cov.kind, cov.total, cov.ready, cov.queued, cov.failed) == ("image", 4, 2, 2, 0)
    assert result.note == ("embeddings are still being prepared for model efficientnet-lite0: "
                           "2 of 4 images can be searched (2 queued); the filters match 2 items")
    assert {h.image_id for h in result.hits} == set(done)

    drain(db, effnet)
    result = search(db, SearchRequest(image_ids=[done[0]], limit=10))
    assert result.coverage is None and result.note == "the filters match 4 items"
    assert {h.image_id for h in result.hits} == set(ids)


def test_new_model_takes_over_only_once_it_covers_the_dataset(db, effnet, tiny_clip_spec):
    """Searches keep answering from the old model while the new one embeds in the background,
    switch when it covers the dataset, and both stay queryable by name."""
    with db.connect() as conn:
        ds = add_dataset(conn, "switch")
        ids = [add_image(conn, ds, p) for p in coco_files(4, start=20)]
        add_box(conn, ids[0], 5, 5, 300, 200)
        conn.commit()
    drain(db, effnet)

    row, backlog = add_model(db, tiny_clip_spec)  # `visearch model add SPEC`
    new = row.name
    assert backlog == 5 and row.is_active
    models = {m.name: m for m in list_models(db)}
    assert models["efficientnet-lite0"].serving and not models[new].serving

    result = search(db, SearchRequest(image_ids=[ids[0]]))
    assert result.model == "efficientnet-lite0" and result.coverage is None

    clip = load_model(new)
    cut = StopAfter(1)
    drain(db, clip, batch_size=2, claim_size=2, stop=cut.event, on_batch=cut.on_batch)
    result = search(db, SearchRequest(image_ids=[ids[0]]))
    assert result.model == "efficientnet-lite0"  # 3 of 5 items still missing for the new model
    # a text query can only be answered by the new model: it is used, and says it is partial
    text = search(db, SearchRequest(query="a photo of a street"))
    assert text.model == new and text.coverage.ready == 2 and "still being prepared" in text.note

    drain(db, clip)
    result = search(db, SearchRequest(image_ids=[ids[0]]))
    assert result.model == new and result.coverage is None
    assert search(db, SearchRequest(image_ids=[ids[0]], model="efficientnet-lite0")).model == "efficientnet-lite0"
    assert {m.name for m in list_models(db) if m.serving} == {new}

    # a dataset the new model has not covered yet is still answered by the old one
    with db.connect() as conn:
        ds2 = add_dataset(conn, "late")
        late = add_image(conn, ds2, coco_files(1, start=30)[0])
        conn.commit()
    drain(db, effnet)
    assert search(db, SearchRequest(image_ids=[late], datasets=["late"])).model == "efficientnet-lite0"
    assert search(db, SearchRequest(image_ids=[ids[0]], datasets=["switch"])).model == new


# ------------------------------------------------------------------ CLI


def test_cli_dataset_model_and_status(db, database, effnet):
    with db.connect() as conn:
        ds = add_dataset(conn, "cli")
        ids = [add_image(conn, ds, p) for p in coco_files(2, start=40)]
        add_image(conn, ds, data=b"garbage", size=(10, 10))
        conn.commit()
    drain(db, effnet, max_attempts=1)

    from visearch.cli import cli

    def run(*args):
        result = CliRunner().invoke(cli, ["--database-url", database.url, *args], catch_exceptions=False)
        return result.exit_code, result.output

    code, out = run("dataset", "list")
    assert code == 0 and "cli" in out and "enabled" in out
    code, out = run("dataset", "disable", "cli")
    assert code == 0 and "disabled" in out
    code, out = run("dataset", "list")
    assert "disabled" in out
    code, out = run("dataset", "enable", "cli")
    assert code == 0 and "enabled" in out
    code, out = run("dataset", "enable", "nope")
    assert code != 0 and "unknown dataset 'nope'" in out
    code, out = run("status")
    assert code == 0 and "efficientnet-lite0" in out and "undecodable image" in out
    code, out = run("status", "--json")
    data = json.loads(out)
    assert data["datasets"][0]["embedded"] == 2 and data["datasets"][0]["failed"] == 1
    code, out = run("model", "list")
    assert code == 0 and "efficientnet-lite0" in out and "*" in out
    code, out = run("model", "deactivate", "efficientnet-lite0")
    assert code == 0 and "inactive" in out
    code, out = run("model", "activate", "efficientnet-lite0")
    assert code == 0 and "now active" in out
    code, out = run("search", "--image-id", str(ids[0]), "-k", "5")
    assert code == 0 and "1 failed" in out
    # VISEARCH_MODEL names a new database's model, it does not pin searches; --model does
    result = CliRunner(env={"VISEARCH_MODEL": "openclip:RN50/nope"}).invoke(
        cli, ["--database-url", database.url, "search", "--image-id", str(ids[0])])
    assert result.exit_code == 0 and "efficientnet-lite0" in result.output
    code, out = run("--model", "openclip:RN50/nope", "search", "--image-id", str(ids[0]))
    assert code != 0 and "unknown model 'openclip:RN50/nope'; known models: efficientnet-lite0" in out
