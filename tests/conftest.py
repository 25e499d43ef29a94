"""Shared fixtures: a real PostgreSQL + pgvector (the embedded server in a temporary data dir,
or ``VISEARCH_TEST_DATABASE_URL``) and the real images in ``../shared/data``."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from visearch.config import Settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Tables emptied between tests that ask for a clean database (order irrelevant with CASCADE).
_DATA_TABLES = (
    "embedding_queue, object_embeddings, image_embeddings, embedding_models, captions, "
    "annotations, image_labels, ingest_rejects, concepts, image_content, images, datasets, "
    "collection_items, collections, embedding_workers, media_roots"
)


def shared_data(*parts: str) -> Path:
    """Path under ``../shared/data``; fails the test (never skips) when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"test data missing: {path}. The tests read real images from ../shared/data "
            "(beside the repository); see that folder's README."
        )
    return path


@pytest.fixture(scope="session")
def settings() -> Settings:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    url = os.environ.get("VISEARCH_TEST_DATABASE_URL")
    # Not pytest's tmp_path: the embedded server runs as its own system user when we are root,
    # and pytest's temporary root is private to us.
    data_dir = Path(tempfile.mkdtemp(prefix="visearch-test-"))
    data_dir.chmod(0o755)
    yield Settings(
        database_url=url or None,
        data_dir=data_dir,
        # small enough for CI, big enough that HNSW builds do not spill
        pg_shared_buffers="256MB",
        pg_maintenance_work_mem="512MB",
    )
    if not url:
        from visearch.db.embedded import release_embedded_server

        release_embedded_server(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def database(settings):
    """The session's database, migrated to the newest schema."""
    from visearch.db.database import open_database

    return open_database(settings)


def truncate_all(database) -> None:
    """Empty every visearch table (ids restart at 1)."""
    with database.connect() as conn:
        conn.execute("DELETE FROM embedding_models")  # its trigger drops the models' HNSW indexes
        conn.execute(f"TRUNCATE {_DATA_TABLES} RESTART IDENTITY CASCADE")
        conn.commit()


def sql(db, query, params=()):
    """Run one statement and commit; its rows, or the row count of a statement that returns none."""
    with db.connect() as conn:
        cur = conn.execute(query, params)
        rows = cur.fetchall() if cur.description else cur.rowcount
        conn.commit()
        return rows


def last_rows(conn, script: str) -> list:
    """Run ``script`` (several statements, as psql runs them); the rows of its last result set that has any."""
    cur = conn.cursor()
    cur.execute(script)
    rows = []
    while True:
        if cur.description:
            rows = cur.fetchall() or rows
        if not cur.nextset():
            return rows


def assert_error(r, status, error=None):
    """Assert ``r`` is an error response in the API's error shape, with ``status`` (and ``error``); its body."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status_code"] == status and body["detail"]
    if error:
        assert body["error"] == error, body
    return body


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the embedded server of ``data_dir`` (VISEARCH_DATA_DIR), or None when it is not running."""
    import psutil

    info = data_dir / "pgdata" / "postmaster.pid"
    if not info.exists():
        return None
    pid = int(info.read_text().split()[0])
    return pid if psutil.pid_exists(pid) else None


def wait_server_stopped(data_dir: Path, timeout: float) -> bool:
    """Whether the embedded server of ``data_dir`` stops within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if postmaster_pid(data_dir) is None:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def db(database):
    """The database, emptied before the test."""
    truncate_all(database)
    return database


@pytest.fixture(scope="session")
def coco128() -> Path:
    return shared_data("coco128")


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    return shared_data("coco-mini")


@pytest.fixture(scope="session")
def cifar10() -> Path:
    return shared_data("cifar10-test")


def save_tiny_openclip(tmp_path_factory, prefix: str = "visearch-tiny"):
    """A tiny randomly initialised open_clip architecture saved as a local checkpoint file
    (no pretrained weights can be downloaded here; tests of the OpenCLIP path use this).

    Returns ``(arch, checkpoint_path, state_dict)``; load it with ``openclip:<arch>/<path>``.
    """
    import json
    import uuid

    import torch

    from visearch.embedding.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip

    arch = f"{prefix}-{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("openclip-cfg")
    (folder / f"{arch}.json").write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(arch)  # random init, on purpose (test only)
    checkpoint = tmp_path_factory.mktemp("openclip-ckpt") / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), checkpoint)
    return arch, checkpoint, model.state_dict()


def ingest_coco128_embedded(database, coco128: Path, *, images: int = 128, boxes_of_images: int):
    """Empty the database, ingest coco128 as dataset ``coco128`` and embed, with
    efficientnet-lite0, images 1..``images`` and the boxes of images 1..``boxes_of_images``
    (the other queue rows are deleted first: those items stay without a vector and unqueued).

    Returns the embedding report.
    """
    from visearch.db.models import register_model
    from visearch.embed import embed_pending
    from visearch.embedding import load_model
    from visearch.ingest import ingest_coco

    truncate_all(database)
    ingest_coco(database, "coco128", coco128 / "train2017",
                coco128 / "annotations" / "instances_train2017.json", progress=False)
    model = load_model("efficientnet-lite0")
    with database.transaction() as conn:
        register_model(conn, model.name, model.dim, model.embeds_text)
        conn.execute("DELETE FROM embedding_queue WHERE NOT ((item_kind = 'image' AND item_id <= %s) OR"
                     " (item_kind = 'object' AND item_id IN (SELECT id FROM annotations WHERE image_id <= %s)))",
                     (images, boxes_of_images))
    return embed_pending(database, model, progress=False)


def pytest_report_header(config):
    """Say up front whether the Citus tests (tests/test_citus.py) run or are skipped."""
    url = os.environ.get("VISEARCH_TEST_CITUS_URL")
    return (f"citus: tests run against the coordinator in VISEARCH_TEST_CITUS_URL" if url else
            "citus: tests SKIPPED (set VISEARCH_TEST_CITUS_URL to a Citus 14 coordinator to run them)")
