"""How recall orders the memories the index found for a query.

bm25 (``store``) scores each memory by the query's words, each counted
alone. Of the memories it found, one that holds two of the query's words
next to each other, in the query's order ("connection pool" for "connection
pool size", "items per page" for "how many items per page"), names what the
query asks about; one that holds them apart ("pool ... connection") or in
another order ("library-logging" for "logging library") merely mentions it.
So the candidates are ordered by how many of the query's adjacent word pairs
they hold in order, then by bm25. Words are compared crudely stemmed, stop
words between two words do not part them ("port of the API server" holds
"api server"), and the title counts as its own stretch of text.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, TypeVar

from .subjects import stem

T = TypeVar("T")

WORD = re.compile(r"[^\W_]+")  # what the full-text tokenizer calls a word (also how a query is split)
MAX_TEXT = 4000  # characters of a memory looked at: a long memory is judged by its opening


def pairs(terms: list[str]) -> list[tuple[str, str]]:
    """The query's adjacent word pairs, stemmed (``terms``: its words, stop words left out)."""
    stems = [stem(t) for t in terms]
    return [(a, b) for a, b in zip(stems, stems[1:]) if a != b]


def phrase_pairs(title: str, text: str, wanted: list[tuple[str, str]], stop: frozenset[str]) -> int:
    """How many of the ``wanted`` pairs the title or the text holds, next
    to each other and in order (``stop`` words between them do not count)."""
    if not wanted:
        return 0
    held = set()
    for part in (title.replace("_", " "), text[:MAX_TEXT]):
        seq = [stem(t) for t in WORD.findall(part.lower()) if t not in stop]
        held.update(zip(seq, seq[1:]))
    return sum(1 for pair in wanted if pair in held)


def by_phrases(hits: list[T], terms: list[str], title: Callable[[T], str], text: Callable[[T], str],
               stop: Iterable[str]) -> list[T]:
    """``hits`` (best bm25 first) ordered by the query's word pairs they
    hold in order, most first; bm25's order otherwise."""
    wanted = pairs(terms)
    if not wanted:
        return hits
    stop = frozenset(stop)
    held = {id(h): phrase_pairs(title(h), text(h), wanted, stop) for h in hits}
    return sorted(hits, key=lambda h: -held[id(h)])
