"""The schema's own guarantees, exercised with plain SQL as any other client would write it."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from visearch.db import migrate

from test_migrations import scratch_url  # noqa: F401 (fixture)


def _dataset(conn, name="d") -> int:
    return conn.execute("INSERT INTO datasets (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]


def _image(conn, dataset_id, width=640, height=480, seed=b"x") -> int:
    return conn.execute(
        "INSERT INTO images (dataset_id, sha256, width, height, format) VALUES (%s, %s, %s, %s, 'JPEG')"
        " RETURNING id",
        (dataset_id, hashlib.sha256(seed).digest(), width, height),
    ).fetchone()[0]


def _box(conn, image_id, x, y, w, h):
    return conn.execute(
        "INSERT INTO annotations (image_id, bbox_x, bbox_y, bbox_w, bbox_h) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING id",
        (image_id, x, y, w, h),
    ).fetchone()[0]


def test_opening_a_database_behind_the_head_migrates_it(scratch_url, settings):
    """open_database brings an older schema to the head (the session's database is always at
    head already, so checking it would prove nothing)."""
    from visearch.db.database import open_database

    assert migrate.upgrade(scratch_url, "0001") == "0001"
    opened = open_database(settings.model_copy(update={"database_url": scratch_url}))
    assert migrate.current_revision(opened.url) == migrate.head_revision() != "0001"
    opened.close()


def test_pgvector_is_recent(db):
    with db.connect() as conn:
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    assert tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)


@pytest.mark.parametrize(
    "box, constraint",
    [
        ((10, 10, 0, 5), "annotations_bbox_has_area"),
        ((10, 10, 5, -1), "annotations_bbox_has_area"),
        ((-1, 10, 5, 5), "annotations_bbox_origin_in_image"),
        ((600, 10, 50, 5), "annotations_bbox_inside_image"),  # 650 > 640 px wide
        ((10, 470, 5, 20), "annotations_bbox_inside_image"),  # 490 > 480 px high
        ((float("nan"), 1, 5, 5), "annotations_bbox_finite"),
    ],
)
def test_database_rejects_boxes_without_area_or_outside_the_image(db, box, constraint):
    with db.connect() as conn:
        image_id = _image(conn, _dataset(conn))
        with pytest.raises(psycopg.errors.CheckViolation) as err:
            _box(conn, image_id, *box)
    assert err.value.diag.constraint_name == constraint


def test_box_touching_the_edges_is_accepted(db):
    with db.connect() as conn:
        image_id = _image(conn, _dataset(conn))
        _box(conn, image_id, 0, 0, 640, 480)


def test_moving_a_box_outside_its_image_is_rejected(db):
    with db.connect() as conn:
        image_id = _image(conn, _dataset(conn))
        box = _box(conn, image_id, 10, 10, 100, 100)
        conn.commit()
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE annotations SET bbox_x = 600 WHERE id = %s", (box,))


def test_images_are_unique_per_dataset_by_content(db):
    with db.connect() as conn:
        d1, d2 = _dataset(conn, "a"), _dataset(conn, "b")
        _image(conn, d1)
        _image(conn, d2)  # the same file may be in another dataset
        with pytest.raises(psycopg.errors.UniqueViolation):
            _image(conn, d1)


def test_concept_tags_are_hashtag_friendly_and_unique(db):
    with db.connect() as conn:
        tags = [
            conn.execute("INSERT INTO concepts (name) VALUES (%s) RETURNING tag", (n,)).fetchone()[0]
            for n in ("traffic light", "Hair  drier", "person")
        ]
        assert tags == ["traffic_light", "hair_drier", "person"]
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO concepts (name) VALUES ('Traffic Light')")


def test_vectors_must_be_unit_length(db):
    with db.connect() as conn:
        image_id = _image(conn, _dataset(conn))
        model = conn.execute(
            "INSERT INTO embedding_models (name, dim, embeds_text) VALUES ('m', 3, false) RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO image_embeddings (model_id, image_id, embedding) VALUES (%s, %s, '[0.6,0.8,0]')",
            (model, image_id),
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "UPDATE image_embeddings SET embedding = '[1,1,0]' WHERE image_id = %s", (image_id,)
            )


def test_vector_columns_are_stored_inline_not_toasted(db):
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT c.relname, a.attstorage FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " WHERE a.attname = 'embedding' AND c.relname IN ('image_embeddings', 'object_embeddings')"
        ).fetchall()
    assert sorted(rows) == [("image_embeddings", "p"), ("object_embeddings", "p")]


def test_triggers_queue_new_and_changed_items_for_active_models_only(db):
    with db.connect() as conn:
        conn.execute("INSERT INTO embedding_models (name, dim, embeds_text) VALUES ('on', 3, false)")
        conn.execute(
            "INSERT INTO embedding_models (name, dim, embeds_text, is_active) VALUES ('off', 3, false, false)"
        )
        image_id = _image(conn, _dataset(conn))
        box = _box(conn, image_id, 1, 1, 10, 10)

        def queued():
            return conn.execute(
                "SELECT m.name, q.item_kind, q.item_id FROM embedding_queue q"
                " JOIN embedding_models m ON m.id = q.model_id ORDER BY 1, 2, 3"
            ).fetchall()

        assert queued() == [("on", "image", image_id), ("on", "object", box)]
        conn.execute("DELETE FROM embedding_queue")
        conn.execute("UPDATE images SET metadata = '{\"k\": 1}' WHERE id = %s", (image_id,))
        conn.execute("UPDATE annotations SET iscrowd = true WHERE id = %s", (box,))
        assert queued() == []  # metadata-only changes do not re-embed
        conn.execute("UPDATE annotations SET bbox_w = 20 WHERE id = %s", (box,))
        assert queued() == [("on", "object", box)]
        conn.execute("UPDATE images SET sha256 = %s WHERE id = %s", (hashlib.sha256(b"y").digest(), image_id))
        assert queued() == [("on", "image", image_id), ("on", "object", box)]
        conn.execute("DELETE FROM images WHERE id = %s", (image_id,))
        assert queued() == []  # deleting an item drops it (and its boxes) from the queue


def test_activating_a_model_queues_its_backlog(db):
    with db.connect() as conn:
        image_id = _image(conn, _dataset(conn))
        _box(conn, image_id, 1, 1, 10, 10)
        conn.execute(
            "INSERT INTO embedding_models (name, dim, embeds_text, is_active) VALUES ('later', 3, false, false)"
        )
        assert conn.execute("SELECT count(*) FROM embedding_queue").fetchone()[0] == 0
        conn.execute("UPDATE embedding_models SET is_active = true WHERE name = 'later'")
        assert conn.execute("SELECT count(*) FROM embedding_queue").fetchone()[0] == 2


def test_enqueue_sends_a_notification(db):
    with db.connect(autocommit=True) as listener, db.connect() as writer:
        listener.execute("LISTEN visearch_embedding_queue")
        writer.execute("INSERT INTO embedding_models (name, dim, embeds_text) VALUES ('n', 3, false)")
        _image(writer, _dataset(writer))
        writer.commit()
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notes] == ["visearch_embedding_queue"]


def test_an_item_changed_while_being_embedded_stays_queued_and_claimable(db):
    from visearch.db import queue

    with db.connect() as conn:
        conn.execute("INSERT INTO embedding_models (name, dim, embeds_text) VALUES ('m', 3, false)")
        box = _box(conn, _image(conn, _dataset(conn)), 1, 1, 10, 10)
        conn.commit()
        claims = queue.claim(conn, model_id=1, worker="w1", limit=10, lease_seconds=600)
        assert len(claims) == 2
        conn.execute("UPDATE annotations SET bbox_w = 20 WHERE id = %s", (box,))  # moved meanwhile
        conn.commit()
        with conn.transaction():
            done = queue.complete(conn, model_id=1, worker="w1", claims=claims)
        assert done == {("image", 1)}
        # the moved box is queued again and free for any worker right away
        again = queue.claim(conn, model_id=1, worker="w2", limit=10, lease_seconds=600)
        assert [(c.item_kind, c.item_id, c.attempts) for c in again] == [("object", box, 0)]  # a claim is no attempt


def test_a_stored_model_is_found_by_any_spelling_of_its_spec(db):
    from visearch.db.models import get_model, register_model
    from visearch.errors import NotFoundError

    with db.connect() as conn:
        register_model(conn, "openclip:ViT-B-32/laion2b_s34b_b79k", 512, True)
        assert get_model(conn, "openclip").name == "openclip:ViT-B-32/laion2b_s34b_b79k"
        with pytest.raises(NotFoundError, match="no vectors for model 'efficientnet-lite0'"):
            get_model(conn, "efficientnet-lite0")
