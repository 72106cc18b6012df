"""Which memories are about the same subject, so the newer one ranks first.

Models restate a changed fact in many ways: the same title, a reworded one
("server-port", "API port"), none at all, "Database: SQLite" and later
"database: PostgreSQL", "The server listens on 8443" and later "Changed the
server port to 7070". Two memories found for a query are taken to be on one
subject when they share a word the query asked for, and

* their texts open with the same key ("Database: ...", "port = ..."), or
* one's title or key (two words at least, with every query word either
  mentions), or all its words when they are few and it has no title, are
  all in the other's words, and a third of them at least ("retry count: 6"
  and "Retry count is now 3, because it was slow"); when both have titles,
  a title must be in the other's title ("metrics-port" says the metrics
  server's port is another subject than "server-port"), or
* their titles share two thirds of their words, or
* 60% of the longer one's words are shared (75% when a query word is in
  only one of them: "metrics port" is not "API port").

They are also on one subject when they share a word the query asked for and
one says what the value was before, in the words models write a change with
("(was 8443)", "changed from 8443", "from Kafka to NATS", "instead of
Kafka", "replaces Kafka", "Kafka is no longer used"), and the other states
that value as a value of its own ("Database: SQLite", not "an in-memory SQLite
container"): "API port: 7070 (changed from 8443)" follows "We switched the
port of the API server to 8443", whatever their other words. Only the newer
of the two can say so, and a value that is a word the query asks about is
the subject, not a value.

An identifier the query asks for (``p1``, ``v2``) that only one of them
holds keeps them apart. Words here are lower-cased, crudely stemmed, without
stop words, without the words that announce a change ("now", "changed",
"instead", "decision") and without numbers: a value (8443, 3.12) is what
changes, not what the memory is about. The bench ``tests/bench_recall.py``
measures these rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, TypeVar

T = TypeVar("T")

MAX_WORDS = 60  # words of a text compared: a long memory is compared by its opening
TEXT_WINDOW = MAX_WORDS * 12  # the characters of a text they are looked for in
TITLE_SHARE = 2 / 3
TEXT_SHARE = 0.6
TEXT_SHARE_ASKED_APART = 0.75
CORE_WORDS = 4  # an untitled memory of at most this many words is its own core
CORE_SHARE = 1 / 3  # a core names the subject of a text when it is a third of its words at least
_WORD = re.compile(r"[a-z0-9]+")
_KEY = re.compile(r"\s*([^:=\n]{1,40}?)\s*(?::|=)\s*\S")
_DIGIT = re.compile(r"[0-9]")
_END = r"(?=\s+(?:because|since|as|after|to)\b|[(),;:!?]|\.(?:\s|$)|$)"
# how a memory says what a value was before it changed
_WAS = [re.compile(p, re.IGNORECASE) for p in (
    r"\((?:was|previously|formerly|before|changed from|switched from|moved from)\s+([^()]{1,40}?)\)",
    r"\b(?:changed|switched|moved|migrated|went|changing|switching|moving|migrating)\b[^.;:!?]{0,40}?\bfrom\s+"
    r"(.{1,40}?)" + _END,
    r"\bfrom\s+(.{1,40}?)\s+to\s",
    r"\binstead of\s+(.{1,40}?)" + _END,
    r"\b(?:replaces|replaced|replacing)\s+(.{1,40}?)" + _END,
    r"(?:^|[.;:!?]\s+)(?:the\s+)?([^.;:!?]{1,40}?)\s+is no longer\b")]
_IDENTIFIER = re.compile(r"[a-z0-9]*(?:[a-z][0-9]|[0-9][a-z])[a-z0-9]*")  # letters and digits: p1, v2, s3
STOP = frozenset("""
a about after all also am an and any are as at be been before being but by can could did do does
doing done for from had has have having he her here hers him his how i if in into is it its itself
just me more most my no nor not of off on once only or other our ours out over own same she
should so some such than that the their theirs them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you
your yours us let lets ll ve re because since was were
""".split())
# the words that announce a change or a decision, not its subject
REVISION = frozenset("""
now new current currently final finally latest update updated updates updating change changed changes
changing switch switched switching move moved moving instead longer anymore again revised revision
correction corrected correct fix fixed decision decisions decide decided choice chosen choose chose going
go use used using uses set note notes agreed agree plan planned will keep kept replace replaced
""".split())
_SKIP = STOP | REVISION
# keys that open many unrelated notes ("Summary: ...", "TODO: ..."): no subject by themselves
GENERIC_KEYS = """
summary status todo important warning result problem issue question answer context reminder next step
info fyi tip idea observation finding conclusion progress round phase task goal remember recall
""".split()


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A crude stem, enough to make "listens", "listening" and "listen" one word."""
    if len(word) <= 3:
        return word
    for suffix, repl in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[:-len(suffix)] + repl
            break
    return word[:-1] if word.endswith("e") and len(word) > 4 else word


def words(text: str, limit: int = MAX_WORDS) -> frozenset[str]:
    """The subject words of a text (see the module doc)."""
    return frozenset(_subject_words(_WORD.findall(text[:TEXT_WINDOW].lower()), limit))


def _subject_words(tokens: list[str], limit: int = MAX_WORDS) -> list[str]:
    found = []
    for raw in tokens:
        if raw in _SKIP or _DIGIT.search(raw):
            continue
        word = stem(raw)
        if word not in REVISION:
            found.append(word)
            if len(found) >= limit:
                break
    return found


_GENERIC = frozenset(stem(w) for w in GENERIC_KEYS)


def identifiers(text: str) -> frozenset[str]:
    """The tokens of a text that mix letters and digits (``p1``, ``v2``, ``s3``)."""
    return _identifiers(_WORD.findall(text.lower()))


def _identifiers(tokens: list[str]) -> frozenset[str]:
    return frozenset(t for t in tokens if _DIGIT.search(t) and _IDENTIFIER.fullmatch(t))


@dataclass(frozen=True)
class Subject:
    """What a memory is about: its title's words (empty for an untitled
    one), the words of its title and text, its text's opening key, and the
    identifiers in its title and text."""

    title: frozenset[str]
    words: frozenset[str]
    key: frozenset[str]
    ids: frozenset[str] = frozenset()
    was: frozenset[str] = frozenset()  # the values its text says were before, lower-cased
    runs: tuple[tuple[str, ...], ...] = ()  # its title's and its text's words, in order
    said: str = ""  # its text, lower-cased, one space between words, in spaces


def subject(title: str, text: str, earlier: str = "") -> Subject:
    """The subject of a memory; ``title`` is "" for an untitled one;
    ``earlier``: the text of its earlier entries, whose changes from a value
    count as its own ("from Kafka to NATS", then "Now Redis (was NATS)")."""
    return _subject(title, text[:TEXT_WINDOW], earlier[-TEXT_WINDOW:])


@lru_cache(maxsize=4096)  # recall after recall meets the same memories; keys stay small
def _subject(title: str, text: str, earlier: str = "") -> Subject:
    title_tokens = _WORD.findall(title.replace("_", " ").lower())
    tokens = _WORD.findall(text.lower())
    title_run, text_run = tuple(_subject_words(title_tokens)), tuple(_subject_words(tokens))
    title_words = frozenset(title_run)
    match = _KEY.match(text)
    key = words(match[1]) if match and "://" not in text[:match.end() + 2] else frozenset()
    return Subject(title_words, title_words | frozenset(text_run), key - _GENERIC,
                   _identifiers(title_tokens + tokens), was=_was(text) | _was(earlier), runs=(title_run, text_run),
                   said=f" {' '.join(text.lower().split())} ")


def _was(text: str) -> frozenset[str]:
    """The values ``text`` says were before (see the module doc); only those
    with a letter or digit outside stop words, so "the old one" is no value."""
    found = set()
    for pattern in _WAS:
        for match in pattern.finditer(text):
            value = " ".join(match[1].lower().split()).strip(" '\"`")
            value = value[4:] if value.startswith("the ") else value
            if value and any(w not in STOP for w in _WORD.findall(value)):
                found.add(value)
    return frozenset(found)


def _names_before(a: Subject, b: Subject, about: frozenset[str]) -> bool:
    """``a`` says it changed from a value that ``b`` states; a value that
    names what the query asks about ("from release to main" for "release
    date") is the subject, not a value."""
    return any(not words(value) & about and _states(b.said, value) for value in a.was)


def _states(said: str, value: str) -> bool:
    """``said`` holds ``value`` as a value of its own, not inside a longer
    name: "Database: SQLite" and "the port is 8443" state SQLite and 8443,
    "an in-memory SQLite" and "8443 clashes with" do not."""
    for match in re.finditer(rf"(?<![a-z0-9]){re.escape(value)}(?![a-z0-9])", said):
        before = re.search(r"([a-z0-9]+) $", said[:match.start()])
        after = re.match(r" ([a-z0-9]+)", said[match.end():])
        if all(m is None or m[1] in _SKIP or _DIGIT.search(m[1]) for m in (before, after)):
            return True
    return False


def same_subject(a: Subject, b: Subject, about: frozenset[str] = frozenset(),
                 asked_ids: frozenset[str] = frozenset(), a_newer: bool | None = None) -> bool:
    """True when ``a`` and ``b`` are on one subject (``about``: the query's
    subject words, ``asked_ids`` its identifiers; ``a_newer``: which one is
    newer, when known: only the newer can say it changed from what the older
    one states)."""
    shared = a.words & b.words
    if not shared or about and not shared & about or asked_ids & (a.ids ^ b.ids):
        return False
    if a.key and a.key == b.key:
        return True
    if a_newer is not False and _names_before(a, b, about) or a_newer is not True and _names_before(b, a, about):
        return True
    asked = about & (a.words | b.words)  # a core that leaves out a word asked for names something else
    if _within(a, b, asked) or _within(b, a, asked):
        return True
    if a.title and b.title and len(a.title & b.title) / len(a.title | b.title) >= TITLE_SHARE:
        return True
    needed = TEXT_SHARE_ASKED_APART if asked - shared else TEXT_SHARE  # a word asked for in one only
    return len(shared) >= needed * max(len(a.words), len(b.words))


def _within(a: Subject, b: Subject, asked: frozenset[str]) -> bool:
    """``a``'s title, key or few words name ``b``'s subject; when both have
    titles, a title names it only inside the other's title."""
    other = b.title if a.title and b.title else b.words
    least = max(2, len(other) * CORE_SHARE)
    small = a.words if not a.title and len(a.words) <= CORE_WORDS else None
    cores = (a.title,) if a.title and b.title else (a.title, a.key, small)
    for core in cores:
        if core and len(core) >= least and asked <= core <= other and _together(core, b):
            return True
    return False


def _together(core: frozenset[str], b: Subject) -> bool:
    """The words of ``core`` stand next to each other (in any order) in
    ``b``'s title or text: "timeout for HTTP requests" names an HTTP request
    timeout, "the env timeout leaks a https when the request ..." does not."""
    n = len(core)
    return any(frozenset(run[i:i + n]) == core for run in b.runs for i in range(len(run) - n + 1))


def newest_first(hits: list[T], subject_of: Callable[[T], Subject], newness: Callable[[T], tuple],
                 query: str = "") -> list[tuple[T, T | None]]:
    """``hits`` (best first, found for ``query``) grouped by subject: a hit
    joins the first group holding a memory on its subject. Returns (hit,
    newer) pairs: first the newest hit of every group, in the order of the
    groups' best hits, then the older ones, each with the newest of its group."""
    about, asked_ids = words(query), identifiers(query)
    groups: list[list[T]] = []
    subjects: list[list[Subject]] = []
    for hit in hits:
        mine, when = subject_of(hit), newness(hit)
        for members, group in zip(subjects, groups):
            if any(same_subject(other, mine, about, asked_ids, newness(member) > when)
                   for other, member in zip(members, group)):
                group.append(hit)
                members.append(mine)
                break
        else:
            subjects.append([mine])
            groups.append([hit])
    current, older = [], []
    for group in groups:
        ordered = sorted(group, key=newness, reverse=True)
        current.append((ordered[0], None))
        older += [(hit, ordered[0]) for hit in ordered[1:]]
    return current + older
