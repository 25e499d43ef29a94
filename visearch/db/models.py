"""Embedding models as the database knows them (``embedding_models``)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import class_row

from visearch.errors import NotFoundError


@dataclass(frozen=True)
class ModelRow:
    id: int
    name: str
    dim: int
    embeds_text: bool
    is_active: bool


class ModelMismatchError(ValueError):
    """A model name is registered with another dimension or text capability."""


def register_model(
    conn: psycopg.Connection, name: str, dim: int, embeds_text: bool, *, active: bool = True
) -> ModelRow:
    """Insert the model if new (queueing every image and box for it); return its row.

    Raises:
        ModelMismatchError: ``name`` exists with a different ``dim``/``embeds_text`` (its
            vectors would be incomparable; register the new weights under a new name).
    """
    with conn.cursor(row_factory=class_row(ModelRow)) as cur:
        row = cur.execute(
            "INSERT INTO embedding_models (name, dim, embeds_text, is_active)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING"
            " RETURNING id, name, dim, embeds_text, is_active",
            (name, dim, embeds_text, active),
        ).fetchone()
    if row is None:
        existing = get_model(conn, name)
        if (existing.dim, existing.embeds_text) != (dim, embeds_text):
            raise ModelMismatchError(
                f"model {name!r} is registered with dim={existing.dim}, "
                f"embeds_text={existing.embeds_text}; the loaded one has dim={dim}, "
                f"embeds_text={embeds_text}"
            )
        if active and not existing.is_active:
            conn.execute("UPDATE embedding_models SET is_active = true WHERE id = %s", (existing.id,))
            existing = get_model(conn, name)
        return existing
    return row


def get_model(conn: psycopg.Connection, name: str) -> ModelRow:
    """The registered model called ``name``.

    Raises:
        NotFoundError: no such model has been registered (nothing was embedded with it).
    """
    row = _model_row(conn, name)
    if row is None:
        # another spelling of a stored model ("openclip" for "openclip:ViT-B-32/laion2b_s34b_b79k")
        from visearch.embedding.registry import canonical_name

        try:
            canonical = canonical_name(name)
        except ValueError:
            canonical = name
        if canonical != name:
            row = _model_row(conn, canonical)
    if row is None:
        known = [r[0] for r in conn.execute("SELECT name FROM embedding_models ORDER BY id")]
        raise NotFoundError(
            f"no vectors for model {name!r} yet: run `visearch --model {name} embed`"
            + (f" (models with vectors: {', '.join(known)})" if known else "")
        )
    return row


def _model_row(conn: psycopg.Connection, name: str) -> ModelRow | None:
    with conn.cursor(row_factory=class_row(ModelRow)) as cur:
        return cur.execute(
            "SELECT id, name, dim, embeds_text, is_active FROM embedding_models WHERE name = %s", (name,)
        ).fetchone()
