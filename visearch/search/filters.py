"""Names of datasets and concepts resolved to ids, with the error a person needs when one is
wrong. A search resolves its names in one call (``search_context()``,
``sql/schema/0015_search_context.sql``) and calls these only to explain a failure."""

from __future__ import annotations

import difflib
from typing import Sequence

import psycopg

from visearch.admin import dataset_ids_in
from visearch.errors import NotFoundError


def resolve_dataset_ids(conn: psycopg.Connection, names: Sequence[str]) -> list[int] | None:
    """Ids of the named datasets (``None`` for no restriction).

    Raises:
        NotFoundError: a name is unknown.
        InvalidRequestError: a named dataset has AI search disabled.
    """
    if not names:
        return None
    return dataset_ids_in(conn, names, searchable=True)


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
