"""Search filters: names resolved to ids, as parameters of ``sql/search/*_candidates.sql``."""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any, Sequence

import psycopg
from psycopg.types.json import Jsonb

from visearch.errors import InvalidRequestError, NotFoundError
from visearch.search.query import parse_query


def resolve_dataset_ids(conn: psycopg.Connection, names: Sequence[str]) -> list[int] | None:
    """Ids of the named datasets (``None`` for no restriction).

    Raises:
        NotFoundError: a name is unknown.
        InvalidRequestError: a named dataset has AI search disabled.
    """
    if not names:
        return None
    rows = conn.execute(
        "SELECT name, id, search_enabled FROM datasets WHERE name = ANY(%s)", (list(names),)
    ).fetchall()
    found = {name: (id_, enabled) for name, id_, enabled in rows}
    missing = [n for n in names if n not in found]
    if missing:
        known = [r[0] for r in conn.execute("SELECT name FROM datasets ORDER BY name")]
        raise NotFoundError(f"unknown dataset(s) {', '.join(map(repr, missing))}; known: {', '.join(known) or 'none'}")
    disabled = [n for n in names if not found[n][1]]
    if disabled:
        raise InvalidRequestError(
            f"AI search is disabled for dataset(s) {', '.join(map(repr, disabled))}; enable it first"
        )
    return [found[n][0] for n in names]


def resolve_concept_ids(conn: psycopg.Connection, terms: Sequence[str]) -> list[int]:
    """Concept ids for ``#tag`` terms (with or without the ``#``, any case), each once, in order.

    A term's tag is computed by the database's ``concept_tag()`` (0001_core.sql), the rule that
    made the stored tags (a copy in Python differed: a leading tab, non-breaking spaces, "İ").

    Raises:
        NotFoundError: a tag matches no concept; the message suggests close ones.
    """
    if not terms:
        return []
    tags = list(dict.fromkeys(r[0] for r in conn.execute(
        "SELECT concept_tag(t) FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n",
        ([t.lstrip("#") for t in terms],))))
    rows = conn.execute("SELECT tag, id FROM concepts WHERE tag = ANY(%s)", (tags,)).fetchall()
    found = dict(rows)
    missing = [t for t in tags if t not in found]
    if missing:
        known = [r[0] for r in conn.execute("SELECT tag FROM concepts")]
        hints = []
        for tag in missing:
            close = difflib.get_close_matches(tag, known, n=3)
            hints.append(f"#{tag}" + (f" (did you mean {', '.join('#' + c for c in close)}?)" if close else ""))
        raise NotFoundError(f"unknown concept(s): {'; '.join(hints)}")
    return [found[t] for t in tags]


def resolve(
    conn: psycopg.Connection,
    *,
    model_id: int,
    dataset_ids: list[int] | None = None,
    concepts: Sequence[str] = (),
    exclude_concepts: Sequence[str] = (),
    metadata: dict | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> dict[str, Any]:
    """The named parameters of the candidate queries (``dataset_ids`` from
    :func:`resolve_dataset_ids`; ``None`` for all datasets)."""
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequestError("metadata filter must be a JSON object")
    return {
        "model_id": model_id,
        "dataset_ids": dataset_ids,
        "concept_ids": resolve_concept_ids(conn, concepts),
        "exclude_concept_ids": resolve_concept_ids(conn, exclude_concepts),
        "metadata": Jsonb(metadata) if metadata else None,
        "created_from": created_from,
        "created_to": created_to,
    }


def is_filtered(params: dict[str, Any]) -> bool:
    """Whether anything beyond the model restricts the candidates."""
    return bool(
        params["dataset_ids"]
        or params["concept_ids"]
        or params["exclude_concept_ids"]
        or params["metadata"] is not None
        or params["created_from"]
        or params["created_to"]
    )


def request_params(
    conn: psycopg.Connection, req, model_id: int, dataset_ids: list[int] | None
) -> dict[str, Any]:
    """The candidate-query parameters of a :class:`~visearch.search.service.SearchRequest`:
    its ``#concept`` terms (from the query text and ``req.concepts``) and every other filter.
    ``dataset_ids`` is ``resolve_dataset_ids(conn, req.datasets)``, which the caller has
    already needed to pick the model."""
    parsed = parse_query(req.query) if req.query else None
    required = list(dict.fromkeys([*(parsed.concepts if parsed else ()), *req.concepts]))
    return resolve(
        conn,
        model_id=model_id,
        dataset_ids=dataset_ids,
        concepts=required,
        exclude_concepts=req.exclude_concepts,
        metadata=req.metadata,
        created_from=req.created_from,
        created_to=req.created_to,
    )
