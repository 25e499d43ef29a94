"""Curation on the vectors already in PostgreSQL.

- :func:`diverse_sample` (:mod:`.sample`): k-means sampling of the items passing a search's filters;
- :func:`refined_search` (:mod:`.refine`): MMR diversity, query expansion, relevance feedback,
  with the algorithms as pure numpy functions in :mod:`.rerank`;
- :func:`find_duplicates` (:mod:`.duplicates`): near-duplicate groups over kept HNSW neighbour pairs;
- :func:`label_error_suspects` (:mod:`.suspects`): items whose neighbours carry another concept.
"""

from visearch.curation.duplicates import DuplicateReport, find_duplicates, refresh_neighbours
from visearch.curation.refine import Refinement, refined_search
from visearch.curation.sample import SampleResult, diverse_sample
from visearch.curation.suspects import Suspect, label_error_suspects

__all__ = [
    "DuplicateReport",
    "Refinement",
    "SampleResult",
    "Suspect",
    "diverse_sample",
    "find_duplicates",
    "label_error_suspects",
    "refined_search",
    "refresh_neighbours",
]
