"""Team memory kept as AgentAZAll text files.

Each agent has an AgentAZAll root (``agents/<name>/`` by default) holding a
``config.json``; its memories live at
``<mailbox_dir>/<agent_name>/<YYYY-MM-DD>/remember/<title>.txt``, exactly
where ``agentazall remember`` puts them, so ``AGENTAZALL_ROOT=agents/<name>
agentazall recall`` reads what the agent stored and the agent's ``recall``
finds what a person stored with the CLI. The files are the only truth.

Searching them goes through a derived index (``memory_index``): a SQLite
full-text cache beside the agents' folders (``agents/.azclaw/``) that any
process may delete, and that follows files added, edited or deleted by
anyone. ``recall`` ranks the whole team's memories; every hit says whose
it is.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import re
import sqlite3
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ..errors import ConfigError
from .index import MemoryIndex
from .layout import MemoryRoot, default_index_path, sanitize_title
from .store import Entry, file_sig, is_corrupt, read_memory, require_fts

MAX_DEDUP_BYTES = 4 << 20  # a memory file larger than this is appended to without looking
INDEX_ENTRIES = 25  # recall("") never lists more than this many memories
HIT_CHARS = 600  # text shown per hit
MAX_HITS = 50
MAX_TERMS = 32
_TERM = re.compile(r"[^\W_]+")  # what the full-text tokenizer calls a word
STOPWORDS = frozenset("""
a about after all also am an and any are as at be been before being but by can could did do does
doing done for from had has have having he her here hers him his how i if in into is it its itself
just me more most my no nor not now of off on once only or other our ours out over own same she
should so some such than that the their theirs them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you
your yours
""".split())


def query_terms(query: str) -> list[str]:
    """The words a query searches for: stop words only count when the query
    has nothing else."""
    words = list(dict.fromkeys(w.lower() for w in _TERM.findall(query)))
    content = [w for w in words if w not in STOPWORDS]
    return (content or words)[:MAX_TERMS]


def excerpt(text: str, terms: list[str], limit: int = HIT_CHARS) -> str:
    """``text`` cut to about ``limit`` characters around the lines that
    mention the most query terms."""
    if len(text) <= limit:
        return text
    lower = text.lower()
    stems = [t[:max(4, len(t) - 2)] for t in terms]  # a crude stem: "deploying" finds "deployed"
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


@dataclass
class Memory:
    """One memory file."""

    agent: str
    day: str
    title: str
    path: Path
    mtime: float
    new: bool = True  # False: ``remember`` found this text already stored under the title, and stored nothing

    def text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""


class TeamMemory:
    """Remember and recall over the AgentAZAll folders of a whole team.

    ``index_path`` is where the derived search index is cached (default:
    ``default_index_path``; ``":memory:"`` keeps it in this process only).
    ``watch=False`` turns off inotify and stats the folders instead."""

    def __init__(self, roots: dict[str, Path], index_path: str | Path | None = None, watch: bool = True):
        require_fts()  # fail at the start, not at the first recall hours into a run
        self.roots = {name: MemoryRoot.prepare(name, path) for name, path in roots.items()}
        self.index_path = str(index_path or default_index_path(self.roots))
        self._index = MemoryIndex(self.index_path, {n: r.mailbox for n, r in self.roots.items()}, watch)

    def _root(self, agent: str) -> MemoryRoot:
        try:
            return self.roots[agent]
        except KeyError:
            raise ConfigError(f"unknown agent {agent!r}; team: {', '.join(self.roots)}") from None

    def _agents(self, agent: str | None) -> list[str] | None:
        return None if agent is None else [self._root(agent).agent]

    def _indexed(self, action):
        """Run ``action`` on a fresh index; the index is a cache, so a corrupt
        or unopenable one is replaced rather than reported."""
        for attempt in range(3):
            try:
                self._index.refresh()
                return action()
            except (sqlite3.DatabaseError, OSError) as exc:
                if attempt == 2 or isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise
                if is_corrupt(exc):
                    self._index.close()
                    self._index.store.discard()
                elif self._index.store.opened == 0 and self.index_path != ":memory:":
                    self.index_path = ":memory:"  # cannot create the cache file: keep it in memory
                    self._index = MemoryIndex(":memory:", self._index.boxes, self._index.watch)
                else:
                    raise
                self._index.invalidate()

    def close(self) -> None:
        """Release the index (its database connection and folder watches)."""
        self._index.close()

    # -- writing ------------------------------------------------------------
    def remember(self, agent: str, text: str, title: str = "") -> Memory:
        """Store ``text`` under ``title`` for today; an existing memory of the
        same title and day gets the text appended, as AgentAZAll does. The
        same text under the same title is stored once: a round redone after
        a kill stores nothing twice: the memory returned then says ``new=False``."""
        root = self._root(agent)
        day = date.today().isoformat()
        name = sanitize_title(title)
        path = root.memory_path(day, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = text.encode("utf-8", "replace")  # a lone surrogate from a model becomes '?'
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # writers of one memory take turns, across processes
            size = os.fstat(fd).st_size
            if body and _holds(os.pread(fd, size, 0) if size <= MAX_DEDUP_BYTES else b"", body):
                return Memory(agent, day, name, path, os.fstat(fd).st_mtime, new=False)
            data = memoryview((b"\n" if size else b"") + body)
            while data:
                data = data[os.write(fd, data):]
            try:  # while the lock is held, so the index sees appends in order
                self._index.record(agent, day, name)
            except (sqlite3.Error, OSError):
                self._index.invalidate()  # the file is written; the next refresh indexes it
            mtime = os.fstat(fd).st_mtime
        finally:
            os.close(fd)
        return Memory(agent, day, name, path, mtime)

    # -- reading ------------------------------------------------------------
    def _memory(self, entry: Entry) -> Memory:
        agent = self._index.agent_of(entry)
        path = self.roots[agent].memory_path(entry.day, entry.name)
        return Memory(agent, entry.day, entry.name, path, entry.mtime_ns / 1e9)

    def memories(self, agent: str | None = None) -> list[Memory]:
        """Every memory of the team (or of one agent), newest first."""
        agents = self._agents(agent)
        return [self._memory(e) for e in self._indexed(lambda: self._index.newest(agents, None))]

    def counts(self) -> dict[str, int]:
        """How many memories each agent has."""
        return self._indexed(self._index.counts)

    def search(self, query: str, agent: str | None = None, limit: int = 5) -> list[tuple[Memory, str]]:
        """The best matches for the query's words with their current text,
        best first: bm25 over title and body (title words weigh more), the
        newer memory first on a tie."""
        terms, agents = query_terms(query), self._agents(agent)
        if not terms:
            return []
        limit = max(0, min(limit, MAX_HITS))
        for _attempt in range(3):
            found, stale = [], False
            for entry in self._indexed(lambda: self._index.search(terms, agents, limit)):
                memory = self._memory(entry)
                st, text = read_memory(str(memory.path))
                text = text.strip()
                if st is None or file_sig(st) != entry.sig:  # changed since indexed: re-index, search again
                    self._index.forget(entry)
                    stale = True
                elif text:
                    found.append((memory, text))
            if not stale:
                break
        return found

    def recall(self, query: str = "", agent: str | None = None, limit: int = 5) -> str:
        """What the recall tool shows: the index for an empty query, else the
        best hits with author, day and text (cut to fit)."""
        self._agents(agent)
        terms = query_terms(query)
        if not terms:
            return self.index(agent)
        hits = self.search(query, agent, limit)
        scope = f" in {agent}'s memories" if agent else ""
        if not hits:
            return f"No memories match {query!r}{scope}."
        lines = [f"{len(hits)} memories for {query!r}{scope}, best first:"]
        for memory, text in hits:
            lines.append(f"\n## {memory.title} (by {memory.agent}, {memory.day})\n{excerpt(text, terms)}")
        return "\n".join(lines)

    def index(self, agent: str | None = None, limit: int = INDEX_ENTRIES) -> str:
        """A bounded list of the newest memories with counts per agent, and
        each agent's latest memory even when others wrote more since."""
        agents = self._agents(agent)

        def look() -> tuple[dict[str, int], list[Entry], list[Entry]]:
            counts, newest = self._index.counts(agents), self._index.newest(agents, limit)
            listed = {self._index.agent_of(e) for e in newest}
            latest = [self._index.latest(name) for name, n in counts.items() if n and name not in listed]
            return counts, newest, [e for e in latest if e is not None]

        counts, newest, latest = self._indexed(look)
        total = sum(counts.values())
        if not total:
            return "No memories stored yet." if agent is None else f"{agent} has no memories yet."
        per_agent = ", ".join(f"{name}: {n}" for name, n in counts.items())
        lines = [f"{total} memories ({per_agent}). Newest first:"]
        lines += [_index_line(self._memory(e)) for e in newest]
        if total > len(newest):
            lines.append(f"... {total - len(newest)} older; recall(query) searches them all.")
            for entry in latest:  # an agent's own latest decision, however busy the others were
                memory = self._memory(entry)
                lines.append(f"Latest of {memory.agent}: " + _index_line(memory)[2:])
        return "\n".join(lines)


def _holds(content: bytes, text: bytes) -> bool:
    """True when ``text`` is one of the blocks appended to ``content``."""
    return (content == text or content.startswith(text + b"\n") or content.endswith(b"\n" + text)
            or b"\n" + text + b"\n" in content)


def _index_line(memory: Memory) -> str:
    try:
        with open(memory.path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", errors="replace")
    except OSError:
        head = ""
    first = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")
    return f"- [{memory.day}] {memory.title} (by {memory.agent}): {first[:80]}"
