"""Released migrations are frozen: a database created at revision 0001, with data, upgrades to
the head and downgrades again through Alembic's API, and its rows survive both ways."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest

from visearch.db import migrate

# Every table revision 0001 created, with a deterministic dump of its rows.
_SNAPSHOT = {
    "datasets": "SELECT id, name, description, search_enabled, metadata FROM datasets ORDER BY id",
    "images": "SELECT id, dataset_id, sha256, width, height, format, file_name FROM images ORDER BY id",
    "image_content": "SELECT image_id, md5(content) FROM image_content ORDER BY image_id",
    "concepts": "SELECT id, name, tag FROM concepts ORDER BY id",
    "image_labels": "SELECT image_id, concept_id, source FROM image_labels ORDER BY 1, 2",
    "annotations": "SELECT id, image_id, concept_id, bbox_x, bbox_y, bbox_w, bbox_h FROM annotations ORDER BY id",
    "captions": "SELECT id, image_id, text FROM captions ORDER BY id",
    "embedding_models": "SELECT id, name, dim, embeds_text, is_active FROM embedding_models ORDER BY id",
    "image_embeddings": "SELECT model_id, image_id, embedding::text FROM image_embeddings ORDER BY 1, 2",
    "object_embeddings": "SELECT model_id, annotation_id, embedding::text FROM object_embeddings ORDER BY 1, 2",
    "embedding_queue": "SELECT model_id, item_kind, item_id, dataset_id FROM embedding_queue ORDER BY 1, 2, 3",
}


def _snapshot(conn) -> dict[str, list[tuple]]:
    return {table: conn.execute(sql).fetchall() for table, sql in _SNAPSHOT.items()}


@pytest.fixture
def scratch_url(database):
    """An empty database of its own on the session's server (dropped afterwards)."""
    with database.connect(autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS visearch_migrations WITH (FORCE)")
        conn.execute("CREATE DATABASE visearch_migrations")
    parts = urlsplit(database.url)
    url = urlunsplit(parts._replace(path="/visearch_migrations"))
    yield url
    with database.connect(autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS visearch_migrations WITH (FORCE)")


def _fill_at_0001(url: str) -> None:
    """Data as visearch 0001 wrote it: a dataset with two images (bytes, a label, a box, a
    caption), a model with one vector and its HNSW index built by 0001's PL/pgSQL function."""
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(url) as conn:
        register_vector(conn)
        ds = conn.execute("INSERT INTO datasets (name, description, metadata) VALUES"
                          " ('old', 'from 0001', '{\"k\": 1}') RETURNING id").fetchone()[0]
        images = []
        for n in range(2):
            data = f"image bytes {n}".encode()
            images.append(conn.execute(
                "INSERT INTO images (dataset_id, sha256, width, height, format, file_name)"
                " VALUES (%s, %s, 640, 480, 'JPEG', %s) RETURNING id",
                (ds, hashlib.sha256(data).digest(), f"{n}.jpg")).fetchone()[0])
            conn.execute("INSERT INTO image_content (image_id, content) VALUES (%s, %s)", (images[-1], data))
        cat = conn.execute("INSERT INTO concepts (name) VALUES ('Traffic light') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO image_labels (image_id, concept_id, source) VALUES (%s, %s, 'folder')",
                     (images[0], cat))
        box = conn.execute("INSERT INTO annotations (image_id, concept_id, bbox_x, bbox_y, bbox_w, bbox_h)"
                           " VALUES (%s, %s, 10, 20, 100, 50) RETURNING id", (images[1], cat)).fetchone()[0]
        conn.execute("INSERT INTO captions (image_id, text) VALUES (%s, 'a street')", (images[0],))
        model = conn.execute("INSERT INTO embedding_models (name, dim, embeds_text) VALUES ('m4', 4, false)"
                             " RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO image_embeddings (model_id, image_id, embedding) VALUES (%s, %s, %s)",
                     (model, images[0], np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)))
        conn.execute("INSERT INTO object_embeddings (model_id, annotation_id, embedding) VALUES (%s, %s, %s)",
                     (model, box, np.array([1, 0, 0, 0], dtype=np.float32)))
        conn.execute("DELETE FROM embedding_queue WHERE item_kind = 'image' AND item_id = %s", (images[0],))
        conn.execute("DELETE FROM embedding_queue WHERE item_kind = 'object' AND item_id = %s", (box,))
        conn.execute("SELECT ensure_hnsw_index('image_embeddings', %s)", (model,))


def test_a_database_from_revision_0001_upgrades_to_head_and_back_with_its_data(scratch_url):
    import psycopg

    assert migrate.upgrade(scratch_url, "0001") == "0001"
    _fill_at_0001(scratch_url)
    with psycopg.connect(scratch_url) as conn:
        before = _snapshot(conn)
    assert len(before["images"]) == 2 and len(before["image_embeddings"]) == 1
    assert len(before["embedding_queue"]) == 1  # the second image, queued by 0001's triggers

    head = migrate.head_revision()
    assert migrate.upgrade(scratch_url, "head") == head and migrate.is_at_head(scratch_url)
    with psycopg.connect(scratch_url) as conn:
        assert _snapshot(conn) == before
        # later revisions work on the old rows: the status view counts them, the old index serves
        status = conn.execute("SELECT items, embedded, stale FROM embedding_status").fetchall()
        assert status == [(3, 2, 1)]
        # 0014: the box's vector carries the box's image id, and follows the box to another image
        assert conn.execute("SELECT e.image_id = a.image_id FROM object_embeddings e"
                            " JOIN annotations a ON a.id = e.annotation_id").fetchone() == (True,)
        with conn.transaction(force_rollback=True):
            conn.execute("UPDATE annotations SET image_id = image_id - 1")
            assert conn.execute("SELECT e.image_id = a.image_id FROM object_embeddings e"
                                " JOIN annotations a ON a.id = e.annotation_id").fetchone() == (True,)
        assert conn.execute("SELECT to_regclass('image_embeddings_hnsw_model_1') IS NOT NULL").fetchone()[0]
        # index builds left PL/pgSQL (revision 0005)
        assert conn.execute("SELECT to_regproc('ensure_hnsw_index') IS NULL").fetchone()[0]

    assert migrate.downgrade(scratch_url, "0001") == "0001"
    with psycopg.connect(scratch_url) as conn:
        assert _snapshot(conn) == before
        assert conn.execute("SELECT to_regclass('embedding_workers') IS NULL").fetchone()[0]
        assert conn.execute("SELECT to_regproc('ensure_hnsw_index') IS NOT NULL").fetchone()[0]

    assert migrate.upgrade(scratch_url, "head") == head  # and up again
    with psycopg.connect(scratch_url) as conn:
        assert _snapshot(conn) == before


def test_the_cheap_head_check_agrees_with_alembic():
    """open_database skips importing Alembic when the scripts' text says the schema is at head."""
    assert migrate.script_heads() == {migrate.head_revision()}
