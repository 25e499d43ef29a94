"""Names of datasets and concepts resolved to ids, with the error a person needs when one is
wrong. A search resolves its names in one statement (``sql/search/context.sql``) and calls
these only to explain a failure; ``visearch embed --dataset`` uses :func:`resolve_dataset_ids`."""

from __future__ import annotations

import difflib
from typing import Sequence

import psycopg

from visearch.errors import InvalidRequestError, NotFoundError


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
