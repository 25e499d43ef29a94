"""The one place curation reaches into the search layer: "which items pass these filters, for
which model". Everything curation needs from search goes through :func:`filtered_candidates`
(and, for refinement, :func:`visearch.search.search` itself), so a rework of the search
internals only has to keep this function working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from visearch.config import Settings
from visearch.db.models import ModelRow

KIND = {"images": "image", "objects": "object"}


@dataclass
class Candidates:
    model: ModelRow
    kind: str  # 'image' | 'object'
    sql: str  # a SELECT of (item_id, image_id, embedding): `candidates` of sql/search/statements.sql, rendered
    params: dict[str, Any]  # its named parameters


def filtered_candidates(conn: psycopg.Connection, req, settings: Settings) -> Candidates:
    """The candidate statement of a :class:`~visearch.search.SearchRequest`'s filters (datasets,
    concepts, excluded concepts, metadata, created-at range) and the model that serves it
    (``req.model`` or the serving model).

    Raises:
        NotFoundError: unknown dataset, concept or model. InvalidRequestError: bad filters.
    """
    import dataclasses

    from visearch.search.service import plan_search, resolve_context

    kind = KIND[req.mode]
    ctx = resolve_context(conn, req, settings, kind=kind, needs_text=False)
    # exact: the candidates themselves, never an HNSW ordering of them
    shape = plan_search(ctx, dataclasses.replace(req, exact=True), kind, settings)
    return Candidates(model=ctx.model, kind=kind, sql=shape.candidates().as_string(conn), params=shape.params)
