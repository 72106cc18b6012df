"""What a search found, and how ``recall`` shows it to a model.

A memory hit is one memory file with its entries; a message hit is one
agent's message of a past round. ``render`` writes them as short blocks, the
newest truth first: each block's header says who stored it, in which round
and when, and an older memory on the subject of a newer one says so.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path

from .layout import MemoryEntry, is_untitled, without_trailers
from .store import read_memory
from .subjects import Subject, subject

HIT_CHARS = 600  # text shown of a memory's newest entry
OLDER_CHARS = 240  # of a memory a newer one superseded
EARLIER_CHARS = 160  # of each earlier entry of the same memory (one line)
EARLIER_SHOWN = 3
MESSAGE_CHARS = 400  # of a round's message


@dataclass
class Memory:
    """One memory file (``round``, ``entries``: as ``remember`` left it)."""

    agent: str
    day: str
    title: str
    path: Path
    mtime: float
    round: int | None = None
    entries: int = 1
    stored: bool = True  # False: ``remember`` found the text already stored and wrote nothing

    def text(self) -> str:
        """Its text as stored, oldest entry first, without azclaw's trailers."""
        return without_trailers(read_memory(str(self.path))[1]).strip()


@dataclass
class MemoryHit:
    """A memory that matched: whose it is, its day, title and file, its
    entries (oldest first) and bm25 score; ``newer``: the newest memory on
    its subject, when that is another."""

    agent: str
    day: str
    title: str
    file: str
    mtime: float
    entries: list[MemoryEntry]
    score: float
    newer: MemoryHit | None = None

    @cached_property
    def memory(self) -> Memory:
        return Memory(self.agent, self.day, self.title, Path(self.file), self.mtime, self.latest.round,
                      len(self.entries))

    @property
    def latest(self) -> MemoryEntry:
        return self.entries[-1]

    @property
    def when(self) -> datetime:
        """When its newest entry was stored (the file's time when azclaw did not say)."""
        return self.latest.when or datetime.fromtimestamp(self.mtime)

    @property
    def newness(self) -> tuple:
        return self.when, self.latest.round or 0, self.mtime

    @cached_property
    def subject(self) -> Subject:
        title = "" if is_untitled(self.title) else self.title
        return subject(title, self.latest.text, "\n".join(e.text for e in self.entries[-4:-1]))


@dataclass
class MessageHit:
    """An agent's message of a past round that matched."""

    agent: str
    round: int
    when: datetime
    text: str


def excerpt(text: str, terms: list[str], limit: int = HIT_CHARS) -> str:
    """``text`` cut to about ``limit`` characters around the lines that
    mention the most query terms."""
    if len(text) <= limit:
        return text
    lower = text.lower()
    stems = _stems(terms)
    found = sorted(m.start() for s in stems for m in re.finditer(re.escape(s), lower))
    best, best_count = 0, -1
    for start in [0] + [m.end() for m in re.finditer(r"\n", text)]:
        count = bisect.bisect_left(found, start + limit) - bisect.bisect_left(found, start)
        if count > best_count:
            best, best_count = start, count
    cut = text[best:best + limit]
    if best + limit < len(text):
        cut = cut[:cut.rfind(" ")] if " " in cut[limit // 2:] else cut
        cut = cut.rstrip() + " [...]"
    return ("[...] " if best else "") + cut.strip()


def _stems(terms: list[str]) -> list[str]:
    return [t[:max(4, len(t) - 2)] for t in terms]  # a crude stem: "deploying" finds "deployed"


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M")


def _by(entry: MemoryEntry, owner: str, when: datetime) -> str:
    if entry.agent is None:
        return f"by a person, in {owner}'s memory, {_stamp(when)}"
    where = f", round {entry.round}" if entry.round else ""
    return f"by {entry.agent}{where}, {_stamp(when)}"


def _line(text: str, terms: list[str], limit: int) -> str:
    return excerpt(" ".join(text.split()), terms, limit)


def _earlier(hit: MemoryHit, terms: list[str]) -> list[str]:
    """The earlier entries of a memory worth a line each: those that mention
    a query word first, newest first, then a count of the rest."""
    earlier = list(enumerate(hit.entries[:-1]))[::-1]
    if not earlier:
        return []
    stems = _stems(terms)
    mentions = [(i, e) for i, e in earlier if any(s in e.text.lower() for s in stems)]
    shown = sorted((mentions + [p for p in earlier if p not in mentions])[:EARLIER_SHOWN], key=lambda p: -p[0])
    lines = []
    for _, entry in shown:
        stamp = _by(entry, hit.agent, entry.when) if entry.when else f"by a person, {hit.day}"
        lines.append(f"earlier ({stamp}): {_line(entry.text, terms, EARLIER_CHARS)}")
    if len(earlier) > len(shown):
        lines.append(f"(+{len(earlier) - len(shown)} earlier entries)")
    return lines


def render_memory(hit: MemoryHit, terms: list[str]) -> str:
    head = f"## {hit.title} ({_by(hit.latest, hit.agent, hit.when)})"
    if hit.newer is None:
        return "\n".join([head, excerpt(hit.latest.text, terms)] + _earlier(hit, terms))
    newer = hit.newer
    since = f"round {newer.latest.round}" if newer.latest.round else _stamp(newer.when)
    lines = [f"{head} older: superseded by {newer.title!r} ({since})",
             excerpt(hit.latest.text, terms, OLDER_CHARS)]
    if len(hit.entries) > 1:
        lines.append(f"(+{len(hit.entries) - 1} earlier entries)")
    return "\n".join(lines)


def render_message(hit: MessageHit, terms: list[str]) -> str:
    return f"## [from round {hit.round}'s messages, {hit.agent}, {_stamp(hit.when)}]\n" + \
        excerpt(hit.text, terms, MESSAGE_CHARS)


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def render(query: str, scope: str, memories: list[MemoryHit], messages: list[MessageHit], terms: list[str]) -> str:
    """The text ``recall`` returns for these hits."""
    if not memories and not messages:
        return f"No memories match {query!r}{scope}."
    counts = [_count(len(memories), "memory", "memories")] if memories else []
    if messages:
        counts.append(_count(len(messages), "message", "messages") + " of past rounds")
    order = "best first, the newest of a subject first" if memories else "best first"
    lines = [f"{' and '.join(counts)} for {query!r}{scope}, {order}:"]
    lines += ["\n" + render_memory(hit, terms) for hit in memories]
    lines += ["\n" + render_message(hit, terms) for hit in messages]
    return "\n".join(lines)
