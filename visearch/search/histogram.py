"""The score distribution of a search over its candidates (``sql/search/score_histogram.sql``).

What a UI needs to pick a score range: how many of the items that pass the filters fall in each
band of cosine similarity to the query. Computed in the database, in one statement, with
``width_bucket`` over the same candidate set the search ranks:

* bins are equal-width over the **observed** score range ``[lo, hi]`` of the candidates (not
  the theoretical [-1, 1]: real models use a narrow part of it, e.g. efficientnet-lite0 scores
  are all >= 0), so ``bins`` bins always resolve the spread that is there; ``edges`` gives the
  ``bins + 1`` boundaries, bin ``k`` is ``[edges[k], edges[k+1])`` and the last one is closed;
* the score range (``min_score``/``max_score``) and the limit are not applied: the histogram
  shows the whole candidate set, so a client can see where a threshold would cut;
* ``sum(counts) == considered``; ``considered`` is the number of candidates unless the
  candidate set is larger than ``max_considered``, in which case a Bernoulli sample of about
  that many is scored (``sampled`` is then true) to bound the cost of scoring every vector.
  (When the search capped its own count, ``SearchResult.candidates_capped``, the candidates are
  counted here in full first.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visearch.db.database import Database
from visearch.db.models import get_model
from visearch.resources import read_sql
from visearch.search import filters
from visearch.search.service import _KIND, SearchRequest

#: Default number of bins, and the largest accepted.
DEFAULT_BINS = 20
MAX_BINS = 200
#: Candidate sets above this many are sampled down to about this many.
DEFAULT_MAX_CONSIDERED = 100_000


@dataclass
class ScoreHistogram:
    """Counts of candidates per score bin. Scores are cosine similarities in [-1, 1]."""

    bins: int
    lo: float | None  # lowest score considered (None: no candidates)
    hi: float | None  # highest score considered
    edges: list[float]  # bins + 1 boundaries, lo .. hi (empty when there were no candidates)
    counts: list[int]  # bins counts, summing to `considered`
    considered: int  # candidates scored: all of them unless `sampled`
    sampled: bool  # True: a random sample of the candidates was scored


def histogram_edges(lo: float, hi: float, bins: int) -> list[float]:
    """``bins + 1`` equal-width boundaries from ``lo`` to ``hi`` (exactly ``hi`` at the end)."""
    width = (hi - lo) / bins
    return [lo + k * width for k in range(bins)] + [hi]


def score_histogram(
    db: Database,
    req: SearchRequest,
    query_vector: np.ndarray,
    *,
    model: str,
    candidates: int,
    candidates_capped: bool = False,
    bins: int = DEFAULT_BINS,
    max_considered: int = DEFAULT_MAX_CONSIDERED,
) -> ScoreHistogram:
    """The score distribution of the search ``req`` over its candidates.

    Args:
        db: the database.
        req: the search (its mode and filters define the candidates).
        query_vector: the search's unit query vector (``SearchResult.query_vector``).
        model: the model that scored it (``SearchResult.model``).
        candidates: how many candidates the search counted (``SearchResult.candidates``),
            used to decide on sampling.
        candidates_capped: the search stopped counting at ``candidates``
            (``SearchResult.candidates_capped``): they are counted here in full first.
        bins: number of equal-width bins, 1..MAX_BINS.
        max_considered: score at most about this many candidates (sample beyond).

    Raises:
        ValueError: ``bins`` out of range.
        NotFoundError: unknown dataset, concept or model (as for the search itself).
    """
    if not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be in [1, {MAX_BINS}], not {bins}")
    kind = _KIND[req.mode]
    with db.pooled() as conn:
        row = get_model(conn, model)
        dataset_ids = filters.resolve_dataset_ids(conn, req.datasets)
        params = filters.request_params(conn, req, row.id, dataset_ids)
        candidates_sql = read_sql(f"search/{kind}_candidates.sql")
        if candidates_capped:  # the search only knows "at least": the sample needs the real count
            candidates = conn.execute(f"SELECT count(*) FROM ({candidates_sql}) AS c", params).fetchone()[0]
        sample = 1.0 if candidates <= max_considered else max_considered / candidates
        sql = read_sql("search/score_histogram.sql").format(candidates=candidates_sql)
        lo, hi, considered, counts = conn.execute(
            sql, {**params, "query": np.asarray(query_vector, dtype=np.float32), "bins": bins, "sample": sample}
        ).fetchone()
        conn.rollback()
    if not considered:
        return ScoreHistogram(bins, None, None, [], [0] * bins, 0, sample < 1)
    return ScoreHistogram(
        bins=bins,
        lo=float(lo),
        hi=float(hi),
        edges=histogram_edges(float(lo), float(hi), bins),
        counts=[int(c) for c in counts],
        considered=int(considered),
        sampled=sample < 1,
    )
