"""Re-ranking and query refinement as pure numpy functions (no database).

- :func:`mmr`: Maximal Marginal Relevance (Carbonell & Goldstein 1998, "The use of MMR,
  diversity-based reranking for reordering documents and producing summaries", SIGIR).
- :func:`average_query_expansion`: average query expansion (Chum, Philbin, Sivic, Isard &
  Zisserman 2007, "Total Recall", ICCV): re-query with the mean of the query and its top hits.
- :func:`rocchio`: relevance feedback (Rocchio 1971, "Relevance feedback in information
  retrieval", in *The SMART Retrieval System*), with the weights of Manning, Raghavan &
  Schuetze, *Introduction to Information Retrieval* (2008), sec. 9.1.1: alpha = 1,
  beta = 0.75, gamma = 0.15.

Vectors are float32 rows of unit L2 norm, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import numpy as np

#: Rocchio weights (Manning et al. 2008, sec. 9.1.1): query, mean of positives, mean of negatives.
ROCCHIO_ALPHA = 1.0
ROCCHIO_BETA = 0.75
ROCCHIO_GAMMA = 0.15


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` (shape (dim,)) scaled to unit L2 norm, float32.

    Raises:
        ValueError: ``v`` is zero or not finite (e.g. a query cancelled out by its negatives).
    """
    v = np.asarray(v, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the refined query vector is zero: the feedback cancels the query out")
    return v / norm


def mmr(query: np.ndarray, candidates: np.ndarray, k: int, diversity: float) -> np.ndarray:
    """Maximal Marginal Relevance: pick ``k`` of ``candidates``, each time the one maximising

        (1 - diversity) * sim(query, d) - diversity * max_{s in selected} sim(d, s)

    (Carbonell & Goldstein's lambda is ``1 - diversity`` here, so that ``diversity = 0`` is the
    plain ranking and 1 is pure novelty). Ties go to the earlier candidate.

    Args:
        query: (dim,) float32, unit norm.
        candidates: (n, dim) float32, unit rows, in their relevance order (best first).
        k: how many to pick (at most n).
        diversity: in [0, 1].

    Returns:
        (min(k, n),) int64 indices into ``candidates``, in MMR order. With ``diversity = 0``
        this is the candidates sorted by similarity to the query, ties by position (the
        given order when it came from the same ranking).

    Raises:
        ValueError: ``diversity`` outside [0, 1] or shapes that do not match.
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError(f"diversity is in [0, 1], not {diversity}")
    cands = np.asarray(candidates, dtype=np.float32)
    if cands.ndim != 2 or cands.shape[1] != np.shape(query)[0]:
        raise ValueError(f"candidates {cands.shape} do not match the query {np.shape(query)}")
    n = cands.shape[0]
    k = min(int(k), n)
    relevance = cands @ np.asarray(query, dtype=np.float32)
    if diversity == 0.0:
        return np.argsort(-relevance, kind="stable")[:k].astype(np.int64)
    chosen: list[int] = []
    # max similarity of each candidate to the chosen ones (-inf while nothing is chosen)
    redundancy = np.full(n, -np.inf, dtype=np.float32)
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        score = (1.0 - diversity) * relevance - diversity * penalty
        score[~available] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        available[best] = False
        np.maximum(redundancy, cands @ cands[best], out=redundancy)
    return np.asarray(chosen, dtype=np.int64)


def average_query_expansion(query: np.ndarray, top_hits: np.ndarray) -> np.ndarray:
    """Average query expansion (Chum et al. 2007): the mean of the query and its top-K hits,
    renormalised.

    Args:
        query: (dim,) unit vector.
        top_hits: (K, dim) unit rows (the K best hits of the first search; K may be 0).

    Returns:
        (dim,) float32, unit norm.
    """
    hits = np.asarray(top_hits, dtype=np.float32).reshape(-1, np.shape(query)[0])
    return unit((np.asarray(query, dtype=np.float32) + hits.sum(axis=0)) / (1 + hits.shape[0]))


def rocchio(
    query: np.ndarray | None,
    positives: np.ndarray,
    negatives: np.ndarray,
    *,
    alpha: float = ROCCHIO_ALPHA,
    beta: float = ROCCHIO_BETA,
    gamma: float = ROCCHIO_GAMMA,
) -> np.ndarray:
    """Rocchio relevance feedback: alpha * q + beta * mean(positives) - gamma * mean(negatives),
    renormalised. Without a query (feedback alone), q is left out.

    Args:
        query: (dim,) unit vector, or None.
        positives, negatives: (n, dim) unit rows (n may be 0).

    Returns:
        (dim,) float32, unit norm.

    Raises:
        ValueError: nothing to build a query from (no query and no positives), or a zero result.
    """
    dim = None if query is None else np.shape(query)[0]
    pos = np.asarray(positives, dtype=np.float32)
    neg = np.asarray(negatives, dtype=np.float32)
    dim = dim or (pos.shape[-1] if pos.size else None)
    if dim is None:
        raise ValueError("relevance feedback needs a query or at least one positive item")
    pos, neg = pos.reshape(-1, dim), neg.reshape(-1, dim)
    total = np.zeros(dim, dtype=np.float32)
    if query is not None:
        total += alpha * np.asarray(query, dtype=np.float32)
    if len(pos):
        total += beta * pos.mean(axis=0)
    if len(neg):
        total -= gamma * neg.mean(axis=0)
    return unit(total)
