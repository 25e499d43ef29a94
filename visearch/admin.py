"""Datasets and embedding models: the one admin service, keyed by id.

``visearch dataset ...``, ``visearch model ...``, ``visearch embed`` and the HTTP routes under
``/v1/datasets`` all call these functions (the CLI turns names into ids with
:func:`dataset_id` / :func:`visearch.db.models.get_model`). SQL: ``sql/catalog/datasets.sql``,
``sql/admin/models.sql``, ``sql/queue/queued.sql``.

Disabling a dataset (``datasets.search_enabled = false``) takes it out of search and out of
automatic embedding, and keeps its vectors. Its items keep being queued when they change (the
queue triggers do not look at the flag), so enabling it again embeds exactly what changed
meanwhile; enabling also notifies the workers (trigger in ``0002_freshness.sql``).

Models: an *active* model gets every new or changed item queued and is embedded by workers
that are not pinned to a model; activating (or adding) one queues everything it has not
embedded (trigger in ``0001_queue_triggers.sql``). Which active model answers a search is
decided per search (:func:`visearch.search.serving_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

import psycopg
from psycopg.rows import class_row

from visearch.db import queue
from visearch.db.database import Database
from visearch.db.models import ModelRow, get_model, register_model
from visearch.errors import ConflictError, InvalidRequestError, NotFoundError
from visearch.resources import read_sql

#: A worker whose heartbeat (every 5 s by default) is older than this is reported dead.
ALIVE_SECONDS = 30.0
#: The channel workers LISTEN on (the queue triggers NOTIFY it; see 0001_queue_triggers.sql).
CHANNEL = "visearch_embedding_queue"


# ---- datasets ---------------------------------------------------------------------------------

@dataclass
class DatasetInfo:
    """A dataset as ``sql/catalog/datasets.sql`` returns it (columns by name)."""

    id: int
    name: str
    description: str
    search_enabled: bool
    metadata: dict[str, Any]
    created_at: datetime
    images: int
    annotations: int  # boxes


def _datasets(conn: psycopg.Connection, dataset_id: int | None = None, name: str | None = None) -> list[DatasetInfo]:
    with conn.cursor(row_factory=class_row(DatasetInfo)) as cur:
        return cur.execute(read_sql("catalog/datasets.sql"), {"id": dataset_id, "name": name}).fetchall()


def list_datasets(db: Database) -> list[DatasetInfo]:
    """Every dataset with its AI search flag and numbers of images and boxes, by id."""
    with db.pooled() as conn:
        return _datasets(conn)


def get_dataset(db: Database, dataset_id: int) -> DatasetInfo:
    """Raises: NotFoundError."""
    with db.pooled() as conn:
        return _get_dataset(conn, dataset_id)


def _get_dataset(conn: psycopg.Connection, dataset_id: int) -> DatasetInfo:
    found = _datasets(conn, dataset_id)
    if not found:
        raise NotFoundError(f"unknown dataset id {dataset_id}")
    return found[0]


def check_dataset(conn: psycopg.Connection, dataset_id: int) -> str:
    """The name of dataset ``dataset_id`` (one primary-key probe: nothing is counted).

    Raises:
        NotFoundError: there is no such dataset.
    """
    row = conn.execute("SELECT name FROM datasets WHERE id = %s", (dataset_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"unknown dataset id {dataset_id}")
    return row[0]


def dataset_name(db: Database, dataset_id: int) -> str:
    """The name of dataset ``dataset_id``, without counting its contents.

    Raises:
        NotFoundError: there is no such dataset.
    """
    with db.pooled() as conn:
        return check_dataset(conn, dataset_id)


def dataset_by_name(db: Database, name: str) -> DatasetInfo:
    """The dataset called ``name`` (disabled ones too), with its numbers of images and boxes.

    Raises:
        NotFoundError: no such dataset; the message lists the known names.
    """
    with db.pooled() as conn:
        found = _datasets(conn, name=name)
        if not found:
            raise _unknown_dataset(conn, name)
        return found[0]


def dataset_id(db: Database, name: str) -> int:
    """The id of the dataset called ``name`` (disabled ones too), without counting its contents.

    Raises:
        NotFoundError: no such dataset; the message lists the known names.
    """
    with db.pooled() as conn:
        return _dataset_id(conn, name)


def dataset_ids_by_name(db: Database, names: Sequence[str]) -> list[int] | None:
    """Ids of the named datasets, disabled ones included (``None`` when ``names`` is empty).

    Raises:
        NotFoundError: a name is unknown.
    """
    if not names:
        return None
    with db.pooled() as conn:
        return dataset_ids_in(conn, names)


def dataset_ids_in(conn: psycopg.Connection, names: Sequence[str], *, searchable: bool = False) -> list[int]:
    """Ids of the datasets called ``names``, in their order, in one query: the one name -> id
    lookup (the CLI's names, a search's ``datasets`` when they need explaining).

    Raises:
        NotFoundError: a name is unknown; the message lists the known names.
        InvalidRequestError: ``searchable`` and a named dataset has AI search disabled.
    """
    found = {name: (id_, enabled) for name, id_, enabled in conn.execute(
        "SELECT name, id, search_enabled FROM datasets WHERE name = ANY (%s)", (list(names),))}
    missing = [n for n in names if n not in found]
    if missing:
        raise _unknown_dataset(conn, *missing)
    disabled = [n for n in names if not found[n][1]]
    if searchable and disabled:
        raise InvalidRequestError(
            f"AI search is disabled for dataset(s) {', '.join(map(repr, disabled))}; enable it first")
    return [found[n][0] for n in names]


def _dataset_id(conn: psycopg.Connection, name: str) -> int:
    return dataset_ids_in(conn, [name])[0]


def _unknown_dataset(conn: psycopg.Connection, *names: str) -> NotFoundError:
    known = [r[0] for r in conn.execute("SELECT name FROM datasets ORDER BY name")]
    return NotFoundError(f"unknown dataset{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))};"
                         f" known: {', '.join(known) or 'none'}")


def create_dataset(
    db: Database, name: str, *, description: str = "", metadata: dict[str, Any] | None = None
) -> DatasetInfo:
    """Raises: InvalidRequestError: empty name. ConflictError: the name is taken."""
    from psycopg.types.json import Jsonb

    name = (name or "").strip()
    if not name:
        raise InvalidRequestError("a dataset needs a non-empty name")
    with db.pooled() as conn:
        row = conn.execute(
            "INSERT INTO datasets (name, description, metadata) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO NOTHING RETURNING id",
            (name, description or "", Jsonb(metadata or {})),
        ).fetchone()
        if row is None:
            existing = conn.execute("SELECT id FROM datasets WHERE name = %s", (name,)).fetchone()
            raise ConflictError(f"a dataset named {name!r} exists already (id {existing[0] if existing else '?'})")
        return _get_dataset(conn, row[0])


def set_search_enabled(db: Database, dataset_id: int, enabled: bool) -> tuple[DatasetInfo, bool]:
    """Switch AI search (and automatic embedding) on or off for a dataset.

    Off leaves it out of search and of automatic embedding and keeps its vectors; on makes it
    searchable again and wakes the workers (trigger).

    Returns:
        The dataset as it is now, and whether the flag changed.
    Raises:
        NotFoundError: unknown dataset id.
    """
    with db.transaction() as conn:
        row = conn.execute(
            "SELECT search_enabled FROM datasets WHERE id = %s FOR UPDATE", (dataset_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"unknown dataset id {dataset_id}")
        changed = row[0] != enabled
        if changed:
            conn.execute("UPDATE datasets SET search_enabled = %s WHERE id = %s", (enabled, dataset_id))
        return _get_dataset(conn, dataset_id), changed


def queued_items(db: Database, dataset_id: int) -> int:
    """Items of the dataset waiting to be embedded, summed over the active models
    (:func:`visearch.db.queue.queued`)."""
    with db.pooled() as conn:
        return sum(queue.queued(conn, dataset_ids=[dataset_id]).values())


def live_workers(db: Database, *, alive_seconds: float = ALIVE_SECONDS) -> int:
    """How many ``visearch worker`` processes are alive (heartbeat within ``alive_seconds``,
    the same rule as ``visearch status``)."""
    with db.pooled() as conn:
        return conn.execute(
            "SELECT count(DISTINCT worker_id) FROM embedding_workers"
            " WHERE state <> 'stopped' AND heartbeat_at > now() - make_interval(secs => %s)",
            (alive_seconds,),
        ).fetchone()[0]


def notify_workers(db: Database) -> None:
    """Wake the running workers now (they LISTEN on :data:`CHANNEL`)."""
    with db.pooled() as conn:  # NOTIFY is sent at commit
        conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))


# ---- models -----------------------------------------------------------------------------------

@dataclass
class ModelInfo:
    """A registered model as ``sql/admin/models.sql`` returns it, plus ``serving``."""

    id: int
    name: str
    dim: int
    embeds_text: bool
    is_active: bool
    activated_at: datetime
    image_vectors: int
    object_vectors: int
    failed: int  # given up on (after the attempt limit)
    queued: int = 0  # waiting to be embedded (visearch.db.queue.queued)
    serving: bool = False  # the model a search over all enabled datasets uses by default (image query)


def list_models(db: Database) -> list[ModelInfo]:
    """Registered models, oldest first, with vector and queue counts and the serving flag."""
    from visearch.search import serving_model

    with db.connect() as conn:
        with conn.cursor(row_factory=class_row(ModelInfo)) as cur:
            models = cur.execute(read_sql("admin/models.sql")).fetchall()
        for m in models:
            m.queued = sum(queue.queued(conn, model_id=m.id).values())
        serving = serving_model(conn, dataset_ids=None, needs_text=False)
    for m in models:
        m.serving = serving is not None and m.id == serving.id
    return models


def add_model(db: Database, spec: str, *, device: str = "cpu") -> tuple[ModelRow, int]:
    """Load the model named by ``spec`` (to learn its dimension), register and activate it.

    Returns:
        The model's row and how many items are now queued for it (its backlog: every image and
        box without a vector for it). Workers embed them in the background; searches switch to
        it per dataset once it covers them (:func:`visearch.search.serving_model`).

    Raises:
        UnknownModelError, ModelWeightsNotFoundError: the spec cannot be loaded.
        ModelMismatchError: the name is registered with another dimension.
    """
    from visearch.embedding import load_model

    model = load_model(spec, device=device)
    with db.transaction() as conn:
        row = register_model(conn, model.name, model.dim, model.embeds_text)
        queued = sum(queue.queued(conn, model_id=row.id).values())
    return row, queued


def set_model_active(db: Database, model_id: int, active: bool) -> bool:
    """(De)activate a registered model; return whether it changed.

    Deactivating stops queueing for it and takes it out of the default-model choice; its vectors
    stay searchable by name. Activating queues its backlog.

    Raises:
        NotFoundError: no model with that id.
    """
    with db.transaction() as conn:
        row = conn.execute("SELECT is_active FROM embedding_models WHERE id = %s FOR UPDATE", (model_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"unknown model id {model_id}")
        if row[0] == active:
            return False
        conn.execute("UPDATE embedding_models SET is_active = %s WHERE id = %s", (active, model_id))
        return True


def model_by_name(db: Database, name: str) -> ModelRow:
    """The registered model called ``name`` (or another spelling of it).

    Raises:
        NotFoundError: no such model.
    """
    with db.pooled() as conn:
        return get_model(conn, name)


def models_to_embed(conn: psycopg.Connection, *, pinned: Sequence[str] = (), default: str) -> list[str]:
    """The model specs an embed run covers: the one rule for ``visearch embed``, ``visearch
    worker`` and the HTTP embed trigger.

    ``pinned`` (``--model`` typed on the command line, ``visearch worker --model``) wins;
    otherwise every active model, oldest activation first; on a fresh database (no model
    registered) ``default`` (``Settings.model``, i.e. ``VISEARCH_MODEL``). The environment never
    pins: a deployment that sets ``VISEARCH_MODEL`` everywhere still embeds every active model,
    so ``visearch model add`` switches models without a configuration change. Models exist but
    none is active: nothing.
    """
    if pinned:
        return list(dict.fromkeys(pinned))
    names = [r[0] for r in conn.execute(
        "SELECT name FROM embedding_models WHERE is_active ORDER BY activated_at, id")]
    if names:
        return names
    has_any = conn.execute("SELECT EXISTS (SELECT 1 FROM embedding_models)").fetchone()[0]
    return [] if has_any else [default]


@dataclass
class DatasetDeletion:
    """What deleting a dataset removed (counted in the same transaction, just before)."""

    dataset_id: int
    name: str
    images: int
    annotations: int
    vectors: int  # image + object vectors, every model
    queue_rows: int  # embedding queue rows, every model
    collection_items: int  # items of (anyone's) collections that showed its images


def rename_dataset(db: Database, dataset_id: int, name: str) -> str:
    """Give dataset ``dataset_id`` a new name (searches, filters and collections refer to it by
    id, so nothing else changes). Returns the new name.

    Raises:
        NotFoundError: unknown dataset. InvalidRequestError: empty name.
        ConflictError: another dataset has that name.
    """
    name = (name or "").strip()
    if not name:
        raise InvalidRequestError("a dataset needs a non-empty name")
    with db.pooled() as conn:
        check_dataset(conn, dataset_id)
        clash = conn.execute("SELECT id FROM datasets WHERE name = %s AND id <> %s", (name, dataset_id)).fetchone()
        if clash:
            raise ConflictError(f"a dataset named {name!r} exists already (id {clash[0]})")
        conn.execute("UPDATE datasets SET name = %s WHERE id = %s", (name, dataset_id))
    return name


def delete_dataset(db: Database, dataset_id: int) -> DatasetDeletion:
    """Delete a dataset with everything in it: images and their bytes, labels, captions, boxes,
    every model's vectors, its embedding queue rows; items of collections showing its images
    drop out of them (the collections stay). One transaction.

    Raises:
        NotFoundError: unknown dataset.
    """
    with db.pooled() as conn:
        row = conn.execute("SELECT name FROM datasets WHERE id = %s FOR UPDATE", (dataset_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"unknown dataset id {dataset_id}")
        counts = conn.execute(read_sql("admin/dataset_contents.sql"), {"dataset_id": dataset_id}).fetchone()
        conn.execute("DELETE FROM datasets WHERE id = %s", (dataset_id,))
    return DatasetDeletion(dataset_id, row[0], *(int(c) for c in counts))
