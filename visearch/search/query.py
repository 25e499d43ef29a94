"""Query strings: free text plus ``#concept`` terms, e.g. ``"a person riding a bicycle #helmet"``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CONCEPT_TERM = re.compile(r"(?<!\S)#([^\s#]+)")


def concept_tag(name: str) -> str:
    """The searchable tag of a concept name, as the database computes it (``concept_tag()``):
    lower case, runs of spaces and ``#`` become ``_``: ``"Traffic light"`` -> ``traffic_light``."""
    return re.sub(r"[\s#]+", "_", name.strip()).lower()


@dataclass(frozen=True)
class ParsedQuery:
    text: str | None  # what remains once the #terms are taken out; None when nothing does
    concepts: tuple[str, ...]  # tags, in order of appearance, without '#', deduplicated


def parse_query(query: str) -> ParsedQuery:
    """Split a query into its free text and its ``#concept`` terms.

    >>> parse_query("a dog on a sofa #dog #couch")
    ParsedQuery(text='a dog on a sofa', concepts=('dog', 'couch'))
    >>> parse_query("#traffic_light")
    ParsedQuery(text=None, concepts=('traffic_light',))
    """
    tags = tuple(dict.fromkeys(concept_tag(t) for t in _CONCEPT_TERM.findall(query)))
    text = " ".join(_CONCEPT_TERM.sub(" ", query).split())
    return ParsedQuery(text=text or None, concepts=tags)
