"""The score distribution of a search over its candidates (``sql/search/score_histogram.sql``).

What a UI needs to pick a score range: how many of the items that pass the filters fall in each
band of cosine similarity to the query. Computed in the database, in one statement, with
``width_bucket`` over the same candidate set the search ranked (its resolved filters and query
vector are reused, nothing is resolved again):

* bins are equal-width over the **observed** score range ``[lo, hi]`` of the candidates (not
  the theoretical [-1, 1]: real models use a narrow part of it, e.g. efficientnet-lite0 scores
  are all >= 0), so ``bins`` bins always resolve the spread that is there; ``edges`` gives the
  ``bins + 1`` boundaries, bin ``k`` is ``[edges[k], edges[k+1])`` and the last one is closed;
* the query's own stored items (``image_ids``, ``annotation_id``) are left out: each would
  score 1.0 and stretch the range;
* the score range (``min_score``/``max_score``) and the limit are not applied: the histogram
  shows the whole candidate set, so a client can see where a threshold would cut;
* ``sum(counts) == considered``. When the search ran on the HNSW index (no filter, or a broad
  one) and the model has more than ``max_considered`` vectors (PostgreSQL's own estimate, no
  counting), the vector table is read with ``TABLESAMPLE BERNOULLI`` at about that many rows
  (``sampled`` is then true); a selective filter's candidates are all scored.
"""

from __future__ import annotations

from dataclasses import dataclass


from visearch.db.database import Database
from visearch.search.service import SearchResult

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
    query_items: int = 0  # the query's own stored items among the candidates (not in counts)


def histogram_edges(lo: float, hi: float, bins: int) -> list[float]:
    """``bins + 1`` equal-width boundaries from ``lo`` to ``hi`` (exactly ``hi`` at the end)."""
    width = (hi - lo) / bins
    return [lo + k * width for k in range(bins)] + [hi]


def score_histogram(
    db: Database,
    result: SearchResult,
    *,
    bins: int = DEFAULT_BINS,
    max_considered: int = DEFAULT_MAX_CONSIDERED,
) -> ScoreHistogram:
    """The score distribution of a search's candidates.

    Args:
        db: the database.
        result: the search's result (its ``shape`` and ``query_vector`` attributes: the
            resolved filters and the unit query vector).
        bins: number of equal-width bins, 1..MAX_BINS.
        max_considered: read about this many vectors at most (TABLESAMPLE beyond), for
            searches answered on the HNSW index.

    Raises:
        ValueError: ``bins`` out of range.
    """
    if not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be in [1, {MAX_BINS}], not {bins}")
    shape = result.shape
    params = {**shape.params, "bins": bins}  # the query: a parameter there, or read by the statement
    with db.pooled() as conn:
        sample = False
        if shape.driver == "hnsw":  # a broad search: how big is the vector table? (an estimate)
            table = "image_embeddings" if shape.kind == "image" else "object_embeddings"
            rows = conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()[0]
            if rows > max_considered:
                sample = True
                params["sample_percent"] = 100.0 * max_considered / rows
        lo, hi, considered, counts, query_items = conn.execute(shape.histogram(sample=sample), params).fetchone()
        conn.rollback()
    if not considered:
        return ScoreHistogram(bins, None, None, [], [0] * bins, 0, sample, int(query_items))
    return ScoreHistogram(
        bins=bins,
        lo=float(lo),
        hi=float(hi),
        edges=histogram_edges(float(lo), float(hi), bins),
        counts=[int(c) for c in counts],
        considered=int(considered),
        sampled=sample,
        query_items=int(query_items),
    )
