"""Query strings: free text plus ``#concept`` terms, e.g. ``"a person riding a bicycle #helmet"``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CONCEPT_TERM = re.compile(r"(?<!\S)#([^\s#]+)")


@dataclass(frozen=True)
class ParsedQuery:
    text: str | None  # what remains once the #terms are taken out; None when nothing does
    concepts: tuple[str, ...]  # terms as typed, without '#', in order, deduplicated; the database's
    # concept_tag() turns them into tags (visearch.search.filters.resolve_concept_ids)


def parse_query(query: str) -> ParsedQuery:
    """Split a query into its free text and its ``#concept`` terms.

    >>> parse_query("a dog on a sofa #dog #couch")
    ParsedQuery(text='a dog on a sofa', concepts=('dog', 'couch'))
    >>> parse_query("#traffic_light")
    ParsedQuery(text=None, concepts=('traffic_light',))
    """
    terms = tuple(dict.fromkeys(_CONCEPT_TERM.findall(query)))
    text = " ".join(_CONCEPT_TERM.sub(" ", query).split())
    return ParsedQuery(text=text or None, concepts=terms)
