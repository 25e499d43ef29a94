"""Control: AI search on/off per dataset, and which models are kept up to date.

Disabling a dataset (``datasets.search_enabled = false``) takes it out of search and out of
automatic embedding, and keeps its vectors. Its items keep being queued when they change (the
queue triggers do not look at the flag), so enabling it again embeds exactly what changed
meanwhile; enabling also notifies the workers (trigger in ``0002_freshness.sql``).

Models: an *active* model gets every new or changed item queued and is embedded by workers
that are not pinned to a model; activating (or adding) one queues everything it has not
embedded (trigger in ``0001_queue_triggers.sql``). Which active model answers a search is
decided per search (:mod:`visearch.search.serving`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from visearch.db.database import Database
from visearch.db.models import ModelRow, get_model, register_model
from visearch.errors import NotFoundError


@dataclass
class DatasetInfo:
    name: str
    search_enabled: bool
    images: int
    objects: int
    description: str
    created_at: datetime


def set_search_enabled(db: Database, name: str, enabled: bool) -> bool:
    """Enable or disable AI search for a dataset; return whether the flag changed.

    Raises:
        NotFoundError: no dataset of that name (the message lists the known ones).
    """
    with db.transaction() as conn:
        row = conn.execute(
            "SELECT id, search_enabled FROM datasets WHERE name = %s FOR UPDATE", (name,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"unknown dataset {name!r}; known: {', '.join(_dataset_names(conn)) or 'none'}")
        if row[1] == enabled:
            return False
        conn.execute("UPDATE datasets SET search_enabled = %s WHERE id = %s", (enabled, row[0]))
        return True


def _dataset_names(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM datasets ORDER BY name")]


def list_datasets(db: Database) -> list[DatasetInfo]:
    """Every dataset with its AI search flag and item counts, by name."""
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT d.name, d.search_enabled,"
            "  (SELECT count(*) FROM images i WHERE i.dataset_id = d.id),"
            "  (SELECT count(*) FROM annotations a JOIN images i ON i.id = a.image_id"
            "   WHERE i.dataset_id = d.id),"
            "  d.description, d.created_at"
            " FROM datasets d ORDER BY d.name"
        ).fetchall()
    return [DatasetInfo(*r) for r in rows]


@dataclass
class ModelInfo:
    name: str
    dim: int
    embeds_text: bool
    is_active: bool
    activated_at: datetime
    image_vectors: int
    object_vectors: int
    stale: int  # queued, not failed (all datasets)
    failed: int
    serving: bool  # the model a search over all enabled datasets uses by default (image query)


def add_model(db: Database, spec: str, *, device: str = "cpu") -> tuple[ModelRow, int]:
    """Load the model named by ``spec`` (to learn its dimension), register and activate it.

    Returns:
        The model's row and how many items are now queued for it (its backlog: every image and
        box without a vector for it). Workers embed them in the background; searches switch to
        it per dataset once it covers them (:mod:`visearch.search.serving`).

    Raises:
        UnknownModelError, ModelWeightsNotFoundError: the spec cannot be loaded.
        ModelMismatchError: the name is registered with another dimension.
    """
    from visearch.embedding import load_model

    model = load_model(spec, device=device)
    with db.transaction() as conn:
        row = register_model(conn, model.name, model.dim, model.embeds_text)
        queued = conn.execute(
            "SELECT count(*) FROM embedding_queue WHERE model_id = %s AND NOT failed", (row.id,)
        ).fetchone()[0]
    return row, queued


def set_model_active(db: Database, name: str, active: bool) -> bool:
    """(De)activate a registered model; return whether it changed.

    Deactivating stops queueing for it and takes it out of the default-model choice; its vectors
    stay searchable by name. Activating queues its backlog.

    Raises:
        NotFoundError: no model of that name.
    """
    with db.transaction() as conn:
        row = get_model(conn, name)
        if row.is_active == active:
            return False
        conn.execute("UPDATE embedding_models SET is_active = %s WHERE id = %s", (active, row.id))
        return True


def list_models(db: Database) -> list[ModelInfo]:
    """Registered models, oldest first, with vector and queue counts."""
    from visearch.search.serving import serving_model

    with db.connect() as conn:
        rows = conn.execute(
            "SELECT m.name, m.dim, m.embeds_text, m.is_active, m.activated_at,"
            "  (SELECT count(*) FROM image_embeddings e WHERE e.model_id = m.id),"
            "  (SELECT count(*) FROM object_embeddings e WHERE e.model_id = m.id),"
            "  (SELECT count(*) FROM embedding_queue q WHERE q.model_id = m.id AND NOT q.failed),"
            "  (SELECT count(*) FROM embedding_queue q WHERE q.model_id = m.id AND q.failed)"
            " FROM embedding_models m ORDER BY m.id"
        ).fetchall()
        serving = serving_model(conn, dataset_ids=None, needs_text=False)
    return [ModelInfo(*r, serving=serving is not None and r[0] == serving.name) for r in rows]
