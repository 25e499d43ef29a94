"""Search: images and objects by image, crop, stored item, text and #concepts."""

from visearch.search.query import ParsedQuery, parse_query
from visearch.search.service import (
    ImageHit,
    ObjectHit,
    SearchRequest,
    SearchResult,
    search,
)

__all__ = [
    "ImageHit",
    "ObjectHit",
    "ParsedQuery",
    "SearchRequest",
    "SearchResult",
    "parse_query",
    "search",
]
