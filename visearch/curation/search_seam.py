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
from visearch.resources import read_sql

KIND = {"images": "image", "objects": "object"}


@dataclass
class Candidates:
    model: ModelRow
    kind: str  # 'image' | 'object'
    sql: str  # a SELECT with columns (item id, embedding, ...): sql/search/<kind>_candidates.sql
    params: dict[str, Any]  # its named parameters


def filtered_candidates(conn: psycopg.Connection, req, settings: Settings) -> Candidates:
    """The candidate statement of a :class:`~visearch.search.SearchRequest`'s filters (datasets,
    concepts, excluded concepts, metadata, created-at range) and the model that serves it
    (``req.model`` or the serving model).

    Raises:
        NotFoundError: unknown dataset, concept or model. InvalidRequestError: bad filters.
    """
    from visearch.search import filters
    from visearch.search.serving import resolve_search_model

    kind = KIND[req.mode]
    dataset_ids = filters.resolve_dataset_ids(conn, req.datasets)
    model = resolve_search_model(conn, req.model, settings, dataset_ids=dataset_ids, needs_text=False)
    params = filters.request_params(conn, req, model.id, dataset_ids)
    return Candidates(model=model, kind=kind, sql=read_sql(f"search/{kind}_candidates.sql"), params=params)
