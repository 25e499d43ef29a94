"""Search: images and objects by image, crop, stored item, text and #concepts."""

from visearch.search.service import (
    Coverage,
    ImageHit,
    ObjectHit,
    ParsedQuery,
    ScoreHistogram,
    SearchRequest,
    SearchResult,
    parse_query,
    score_histogram,
    search,
    serving_model,
)

__all__ = [
    "Coverage",
    "ImageHit",
    "ObjectHit",
    "ParsedQuery",
    "ScoreHistogram",
    "SearchRequest",
    "SearchResult",
    "parse_query",
    "score_histogram",
    "search",
    "serving_model",
]
