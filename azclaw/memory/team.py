"""Team memory kept as AgentAZAll text files.

Each agent has an AgentAZAll root (``agents/<name>/`` by default) holding a
``config.json``; its memories live at
``<mailbox_dir>/<agent_name>/<YYYY-MM-DD>/remember/<title>.txt``, exactly
where ``agentazall remember`` puts them, so ``AGENTAZALL_ROOT=agents/<name>
agentazall recall`` reads what the agent stored and the agent's ``recall``
finds what a person stored with the CLI. The files are the only truth; what
azclaw writes inside them (who stored an entry, in which round, when; the
rounds' messages) is described in ``layout``.

Searching them goes through derived indexes (``memory_index``): SQLite
full-text caches beside the agents' folders (``agents/.azclaw/``) that any
process may delete, and that follow files added, edited or deleted by
anyone. ``recall`` ranks the whole team's memories, the newest of a subject
first, then the rounds' messages; every hit says whose it is and when.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, StorageError
from .hits import Memory, MemoryHit, MessageHit, render
from .index import MemoryIndex
from .layout import (MEMORIES, MESSAGES, MemoryRoot, default_index_path, format_entry, format_message,
                     is_untitled, messages_index_path, parse_entries, parse_message, round_name, round_of,
                     sanitize_title)
from .rank import WORD, by_phrases
from .store import Entry, file_sig, is_corrupt, read_memory, require_fts
from .subjects import newest_first

MAX_DEDUP_BYTES = 4 << 20  # a memory file larger than this is appended to without looking
INDEX_ENTRIES = 25  # recall("") never lists more than this many memories
MAX_HITS = 50
MAX_TERMS = 32
MESSAGE_HITS = 2  # messages of past rounds shown after the memories, at least
STOPWORDS = frozenset("""
a about after all also am an and any are as at be been before being but by can could did do does
doing done for from had has have having he her here hers him his how i if in into is it its itself
just me more most my no nor not now of off on once only or other our ours out over own same she
should so some such than that the their theirs them then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you
your yours use used uses using may might must shall per many much
""".split())
# "how long", "how big", "how often": the word after "how" asks for a measure, it is not what is asked about
MEASURES = frozenset("long many much big large small often old far soon fast slow high low wide".split())

def query_terms(query: str) -> list[str]:
    """The words a query searches for: stop words (and the measure a "how"
    asks for) only count when the query has nothing else."""
    said = [w.lower() for w in WORD.findall(query)]
    asked = {w for before, w in zip(said, said[1:]) if before == "how" and w in MEASURES}
    words = list(dict.fromkeys(said))
    content = [w for w in words if w not in STOPWORDS and w not in asked]
    return (content or words)[:MAX_TERMS]


class TeamMemory:
    """Remember and recall over the AgentAZAll folders of a whole team.

    ``index_path`` is where the derived search index is cached (default:
    ``default_index_path``; ``":memory:"`` keeps it in this process only);
    the rounds' messages are cached beside it. ``watch=False`` turns off
    inotify and stats the folders instead."""

    def __init__(self, roots: dict[str, Path], index_path: str | Path | None = None, watch: bool = True):
        require_fts()  # fail at the start, not at the first recall hours into a run
        self.roots = {name: MemoryRoot.prepare(name, path) for name, path in roots.items()}
        self.index_path = str(index_path or default_index_path(self.roots))
        self.messages_path = messages_index_path(self.index_path)
        boxes = {n: r.mailbox for n, r in self.roots.items()}
        self._index = MemoryIndex(self.index_path, boxes, watch)
        self._messages = MemoryIndex(self.messages_path, boxes, watch, MESSAGES)
        self._findable = False

    def _root(self, agent: str) -> MemoryRoot:
        try:
            return self.roots[agent]
        except KeyError:
            raise ConfigError(f"unknown agent {agent!r}; team: {', '.join(self.roots)}") from None

    def _agents(self, agent: str | None) -> list[str] | None:
        return None if agent is None else [self._root(agent).agent]

    def _indexed(self, action, which: str = "_index"):
        """Run ``action`` on a fresh index (``which``: the memories' or the
        messages'); an index is a cache, so a corrupt or unopenable one is
        replaced rather than reported."""
        path_attr = "index_path" if which == "_index" else "messages_path"
        for attempt in range(3):
            index = getattr(self, which)
            try:
                index.refresh()
                return action()
            except (sqlite3.DatabaseError, OSError) as exc:
                if attempt == 2 or isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise
                if is_corrupt(exc):
                    index.close()
                    index.store.discard()
                elif index.store.opened == 0 and getattr(self, path_attr) != ":memory:":
                    setattr(self, path_attr, ":memory:")  # cannot create the cache file: keep it in memory
                    setattr(self, which, MemoryIndex(":memory:", index.boxes, index.watch, index.shelf))
                else:
                    raise
                getattr(self, which).invalidate()

    def close(self) -> None:
        """Release the indexes (their database connections and folder watches)."""
        self._index.close()
        self._messages.close()

    # -- writing ------------------------------------------------------------
    def remember(self, agent: str, text: str, title: str = "", *, round: int | None = None,
                 at: datetime | None = None) -> Memory:
        """Store ``text`` under ``title`` for today (the day of ``at``), as an
        entry that says who stored it, in which ``round`` and when. An
        existing memory of that title and day gets the entry appended, as
        AgentAZAll appends. Stored once: the same text as the memory's newest
        entry, or as an entry the agent stored in the same round under any
        title (a turn redone after a kill), adds nothing (``stored`` is False).
        No title: the time of day names a new file."""
        root = self._root(agent)
        if round:
            earlier = self._stored_in_round(agent, text, round)
            if earlier is not None:
                return earlier
        when = (at or datetime.now()).replace(microsecond=0)
        day = when.date().isoformat()
        entry = format_entry(text, agent, round or None, when)
        block = entry.encode("utf-8", "replace")  # a lone surrogate from a model becomes '?'
        Path(MEMORIES.dir(root.mailbox, day)).mkdir(parents=True, exist_ok=True)
        name, fd = self._open_memory(root, day, title, when)
        path = root.memory_path(day, name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # writers of one memory take turns, across processes
            size = os.fstat(fd).st_size
            head = os.pread(fd, size, 0) if 0 < size <= MAX_DEDUP_BYTES else b""
            entries = parse_entries(head.decode("utf-8", "replace")) if head else []
            mine = parse_entries(block.decode("utf-8"))
            if mine and entries and _stored(entries, mine[0].text, round or None):
                return Memory(agent, day, name, path, os.fstat(fd).st_mtime, round or None, len(entries),
                              stored=False)
            data = memoryview((b"\n" if size and not head.endswith(b"\n") else b"") + block)
            while data:
                data = data[os.write(fd, data):]
            try:  # while the lock is held, so the index sees appends in order
                self._index.record(agent, day, name)
            except (sqlite3.Error, OSError):
                self._index.invalidate()  # the file is written; the next refresh indexes it
            mtime = os.fstat(fd).st_mtime
        finally:
            os.close(fd)
        return Memory(agent, day, name, path, mtime, round or None, len(entries) + 1 if size else 1)

    def _stored_in_round(self, agent: str, text: str, round_no: int) -> Memory | None:
        """The memory in which ``agent`` already stored ``text`` in round
        ``round_no`` under any title (found through the index; a broken index
        finds nothing, and the title's own check still holds)."""
        wanted = text.strip()
        try:
            found = self.hits(wanted[:300], agent, limit=5)
        except Exception:  # noqa: BLE001 - the index is a cache: without it, nothing is found
            return None
        for hit in found:
            if any(e.text.strip() == wanted and e.round == round_no for e in hit.entries):
                memory = hit.memory
                return Memory(memory.agent, memory.day, memory.title, memory.path, memory.mtime, round_no,
                              len(hit.entries), stored=False)
        return None

    @staticmethod
    def _open_memory(root: MemoryRoot, day: str, title: str, when: datetime) -> tuple[str, int]:
        """The memory file to append to: the title's, or for no title a new
        file named by the time of day (``-2``, ``-3``... when it is taken)."""
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        if title:
            name = sanitize_title(title)
            return name, os.open(root.memory_path(day, name), flags, 0o644)
        base = sanitize_title("", when)
        for n in range(1, 1000):
            name = base if n == 1 else f"{base}-{n}"
            try:
                return name, os.open(root.memory_path(day, name), flags | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
        return base, os.open(root.memory_path(day, base), flags, 0o644)

    def archive_round(self, round_no: int, messages: list[tuple[str, str]], *,
                      on_error: Callable[[str], None] | None = None) -> int:
        """Keep each agent's message of round ``round_no`` (``messages``:
        (agent, text) pairs) as a note in its mailbox, where ``recall``
        finds it after the memories. Doing a round again replaces that
        day's note of the round (a resumed run redoing it archives it once).
        Returns how many notes were written. A file or index that cannot be
        written raises StorageError, or with ``on_error`` is told to it."""
        texts: dict[str, list[str]] = {}
        for agent, text in messages:
            self._root(agent)
            if text and text.strip():
                texts.setdefault(agent, []).append(text.strip())
        when = datetime.now().replace(microsecond=0)
        day, name, written, problems = when.date().isoformat(), round_name(round_no), 0, []
        for agent, parts in texts.items():
            body = "\n\n".join(parts)
            path = self.roots[agent].message_path(day, round_no)
            try:
                if path.is_file() and parse_message(path.read_text(encoding="utf-8", errors="replace")).text == \
                        parse_message(format_message(agent, round_no, when, body)).text:
                    continue
                if not path.parent.is_dir():  # one stat; mkdir with parents tries every level
                    path.parent.mkdir(parents=True, exist_ok=True)
                temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # no round-*.txt: never indexed
                try:
                    temp.write_bytes(format_message(agent, round_no, when, body).encode("utf-8", "replace"))
                    os.replace(temp, path)
                finally:
                    temp.unlink(missing_ok=True)
                written += 1
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror or exc}")
                continue
            try:
                self._messages.record(agent, day, name)
            except (sqlite3.Error, OSError):
                self._messages.invalidate()  # the note is written; the next refresh indexes it
        if problems:
            message = f"round {round_no}'s messages were not all archived: " + "; ".join(problems)
            if on_error is None:
                raise StorageError(message)
            on_error(message)
        return written

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

    def findable(self) -> bool:
        """Whether ``recall`` could find anything: a memory, or a past round's
        message. Asked before every constrained step, so once the answer is
        yes it stays yes (a team's memory does not empty itself)."""
        if not self._findable:
            self._findable = any(self.counts().values()) or \
                any(self._indexed(lambda: self._messages.counts(), "_messages").values())
        return self._findable

    def hits(self, query: str, agent: str | None = None, limit: int = 5) -> list[MemoryHit]:
        """The best matches for the query's words, best first (bm25 over
        title and text, title words weigh more; a memory holding more of the
        query's adjacent word pairs in order comes first, ``rank``), except
        that of memories on one subject the newest comes first and the older
        ones come after every newest, each with ``newer`` set (``subjects``)."""
        terms, agents = query_terms(query), self._agents(agent)
        if not terms:
            return []
        limit = max(0, min(limit, MAX_HITS))
        pool = min(2 * MAX_HITS, 4 * limit + 5)  # candidates: the newer of a subject, or a phrase, may rank lower
        found = self._read(lambda: self._index.search(terms, agents, pool), "_index", self._memory_hit)
        found = by_phrases(found, terms, lambda h: "" if is_untitled(h.title) else h.title,
                           lambda h: "\n".join(e.text for e in h.entries), STOPWORDS)
        ordered = newest_first(found, lambda h: h.subject, lambda h: h.newness, " ".join(terms))
        for hit, newer in ordered:
            hit.newer = newer
        return [hit for hit, _ in ordered][:limit]

    def search(self, query: str, agent: str | None = None, limit: int = 5) -> list[tuple[Memory, str]]:
        """``hits`` as (memory, its entries' text without azclaw's trailers, oldest first)."""
        return [(h.memory, "\n".join(e.text for e in h.entries)) for h in self.hits(query, agent, limit)]

    def message_hits(self, query: str, agent: str | None = None, limit: int = MESSAGE_HITS) -> list[MessageHit]:
        """The rounds' messages that best match the query's words, best first."""
        terms, agents = query_terms(query), self._agents(agent)
        if not terms or limit <= 0:
            return []
        return self._read(lambda: self._messages.search(terms, agents, min(limit, MAX_HITS)), "_messages",
                          self._message_hit)

    def _read(self, look, which: str, make) -> list:
        """The hits of the index search ``look``, made from their files as
        they are now; a file changed since it was indexed is indexed again
        and the search repeated."""
        index = getattr(self, which)
        for _attempt in range(3):
            found, stale = [], False
            for entry in self._indexed(look, which):
                hit = make(entry)
                if hit is None:  # changed since indexed: index it again, search again
                    index.forget(entry)
                    stale = True
                elif hit:
                    found.append(hit)
            if not stale:
                break
        return found

    def _memory_hit(self, entry: Entry):
        agent = self._index.agent_of(entry)
        path = MEMORIES.path(self._index.boxes[agent], entry.day, entry.name)
        st, content = read_memory(path)
        if st is None or file_sig(st) != entry.sig:
            return None
        entries = parse_entries(content)
        if not entries:
            return False
        return MemoryHit(agent, entry.day, entry.name, path, entry.mtime_ns / 1e9, entries, entry.score)

    def _message_hit(self, entry: Entry):
        owner = self._messages.agent_of(entry)
        st, content = read_memory(MESSAGES.path(self.roots[owner].mailbox, entry.day, entry.name))
        if st is None or file_sig(st) != entry.sig:
            return None
        said = parse_message(content)
        if not said.text:
            return False
        return MessageHit(said.agent or owner, said.round or round_of(entry.name),
                          said.when or datetime.fromtimestamp(st.st_mtime), said.text)

    def recall(self, query: str = "", agent: str | None = None, limit: int = 5) -> str:
        """What the recall tool shows: the index for an empty query, else the
        best memories (the newest of a subject first), then the best
        messages of past rounds, each with author, round and time."""
        self._agents(agent)
        terms = query_terms(query)
        if not terms:
            return self.index(agent)
        memories = self.hits(query, agent, limit)
        messages = self.message_hits(query, agent, max(MESSAGE_HITS, limit - len(memories)))
        scope = f" in {agent}'s memories" if agent else ""
        return render(query, scope, memories, messages, terms)

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


def _stored(entries: list, text: str, round_no: int | None) -> bool:
    """True when ``text`` is already the newest entry, or an entry of the same round."""
    return entries[-1].text == text or (round_no is not None and any(
        e.text == text and e.round == round_no for e in entries))


def _index_line(memory: Memory) -> str:
    """A memory in the index listing: the first line of its newest entry
    (of the file, when azclaw stored none of it)."""
    try:
        with open(memory.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - 8192))
            text = fh.read(8192).decode("utf-8", errors="replace")
            if size > 8192 and "[stored by " not in text:
                fh.seek(0)
                text = fh.read(4096).decode("utf-8", errors="replace")
    except OSError:
        text = ""
    entries = parse_entries(text) if "[stored by " in text else [parse_entries(text)[0]] if text.strip() else []
    latest = entries[-1].text if entries else ""
    first = next((ln.strip() for ln in latest.splitlines() if ln.strip()), "")
    return f"- [{memory.day}] {memory.title} (by {memory.agent}): {first[:80]}"
