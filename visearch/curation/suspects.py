"""Label-error suspects: labelled items whose nearest neighbours mostly carry another concept
(a k-NN vote in embedding space, as in FiftyOne Brain's "mistakenness" without a classifier;
cf. Northcutt, Athalye & Mueller 2021 on label errors in benchmark datasets).

The work is one SQL function, ``label_error_suspects(model, kind, dataset, k, min_share)``
(``sql/schema/0007_curation.sql``), that analysts can call too; each item's k-NN lookup there
is an HNSW index scan. This module resolves names and shapes the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from visearch.config import Settings, get_settings
from visearch.curation.search_seam import filtered_candidates
from visearch.db.database import Database
from visearch.errors import InvalidRequestError


@dataclass
class Suspect:
    item_id: int  # annotation id (objects) or image id (images)
    image_id: int
    concept: str  # its label
    looks_like: str  # the most common other concept among its neighbours
    share: float  # fraction of its labelled neighbours carrying `looks_like`
    agreeing: float  # fraction carrying its own concept
    neighbour_ids: list[int]  # best first
    neighbour_concepts: list[str]
    scores: list[float]  # cosine similarities to the neighbours


def label_error_suspects(
    db: Database, dataset: str, *, objects: bool = True, k: int = 10, min_share: float = 0.5,
    limit: int | None = None, model: str | None = None, settings: Settings | None = None,
) -> list[Suspect]:
    """Items of ``dataset`` whose ``k`` nearest labelled neighbours carry another concept in a
    share >= ``min_share``; strongest suspects first (share descending, then agreeing ascending).

    Objects: a box's concept. Images: the image's label when it has exactly one.

    Raises:
        InvalidRequestError: k outside [1, 200], min_share outside (0, 1]; search disabled.
        NotFoundError: unknown dataset or model.
    """
    from visearch.search import SearchRequest

    settings = settings or get_settings()
    if not 1 <= k <= 200:
        raise InvalidRequestError(f"k is in [1, 200], not {k}")
    if not 0 < min_share <= 1:
        raise InvalidRequestError(f"min_share is in (0, 1], not {min_share}")
    mode = "objects" if objects else "images"
    with db.pooled() as conn:
        cands = filtered_candidates(conn, SearchRequest(mode=mode, datasets=(dataset,), model=model), settings)
        rows = conn.execute(
            "SELECT * FROM label_error_suspects(%s, %s, %s, %s, %s)",
            (cands.model.name, "object" if objects else "image", cands.params["dataset_ids"][0], k, min_share),
        ).fetchall()
        conn.rollback()
    out = [Suspect(r[0], r[1], r[2], r[3], float(r[4]), float(r[5]), list(r[6]), list(r[7]),
                   [float(s) for s in r[8]]) for r in rows]
    return out[:limit] if limit else out
