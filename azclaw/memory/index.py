"""Keeps the memory store in step with the AgentAZAll folders.

The files are the truth; the store (``memory_store``) is a cache of them.
The first refresh in a process validates everything: it lists every day
folder and stats every memory file against the stored signatures. After
that a refresh only looks at what changed:

- with inotify (``memory_watch``), the folders report each file created,
  written, renamed or deleted, by azclaw, the ``agentazall`` CLI or a person;
- without it, each day's ``remember`` folder is stat'ed (adding or deleting a
  file changes its mtime) and a rolling slice of files is re-stat'ed to
  catch edits made in place.

A folder or file changed within ``RACY_NS`` of a look is looked at again
later, since file times are coarse (the "racy git" problem).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .layout import MEMORIES, Shelf, day_folders, is_day, memory_name
from .store import Entry, MemoryStore, file_sig, read_memory
from .watch import LOST, Watcher

RACY_NS = 2_000_000_000
RACY_MAX = 1000  # racy files tracked from folder scans (watched changes are always tracked)
SWEEP_FILES = 500  # files re-stat'ed per refresh in folders that are not watched
BATCH = 2000  # files stored per write transaction, so other processes get their turn


@dataclass
class _Day:
    sig: str  # of the remember folder ("" when there is none)
    scanned_ns: int
    files: int
    watched: bool


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _dir_sig(st: os.stat_result | None) -> str:
    return "" if st is None else f"{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def _newest(st: os.stat_result) -> int:
    return max(st.st_mtime_ns, st.st_ctime_ns)


def _storable(name: str) -> bool:
    """False for a file name that is not valid UTF-8 (SQLite cannot hold it)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _read_all(paths: list[str]) -> list:
    return [read_memory(p) for p in paths]


class MemoryIndex:
    """Search over the memories of ``boxes`` (agent name -> mailbox folder,
    ``<mailbox_dir>/<agent_name>``), cached in the SQLite file ``path``;
    ``shelf``: which files of the day folders (the memories, or the rounds'
    messages)."""

    def __init__(self, path: str | Path, boxes: dict[str, Path], watch: bool = True, shelf: Shelf = MEMORIES):
        self.boxes = {agent: str(Path(mailbox).absolute()) for agent, mailbox in boxes.items()}
        self.shelf = shelf
        self.store = MemoryStore(path, list(self.boxes.values()), shelf)
        self.lock = self.store.lock
        self.watch = watch
        self._watcher: Watcher | None = None
        self._days: dict[int, dict[str, _Day]] = {}
        self._box_watched: dict[int, bool] = {}
        # files changed lately -> when we last read them
        self._racy: dict[tuple[int, str, str], int] = {}
        self._validated_pid = 0
        self._cursor = 0
        self._opened = 0
        self._ids: dict[str, int] = {}
        self._owners: dict[int, str] = {}

    # -- names ---------------------------------------------------------------
    def _names(self) -> None:
        """Box ids come from the store; a new store file (a fork, a discarded
        cache) may number them anew, and must be validated again."""
        _ = self.store.conn
        if self._opened != self.store.opened:
            if self._opened:
                self._validated_pid = 0
            self._opened = self.store.opened
            self._ids = {agent: self.store.ids[mailbox] for agent, mailbox in self.boxes.items()}
            self._owners = {}
            for agent, box in self._ids.items():
                self._owners.setdefault(box, agent)

    def box(self, agent: str) -> int:
        self._names()
        return self._ids[agent]

    def _mailbox(self, box: int) -> str:
        return self.boxes[self._owners[box]]

    def scope(self, agents: list[str] | None) -> list[int]:
        self._names()
        return sorted({self._ids[a] for a in (self.boxes if agents is None else agents)})

    def agent_of(self, entry: Entry) -> str:
        return self._owners[entry.box]

    # -- keeping up ------------------------------------------------------------
    def refresh(self, full: bool = False) -> None:
        """Bring the store up to date with the files (see the module doc)."""
        with self.lock:
            self._names()
            if full or self._validated_pid != os.getpid():
                self._validate()
                return
            if self._watcher is not None:
                overflow, events = self._watcher.read()
                if overflow:
                    self._validate()
                    return
                self._apply(events)
            self._poll()
            self._recheck_racy()

    def record(self, agent: str, day: str, name: str) -> None:
        """Store one memory file now, after azclaw wrote it."""
        with self.lock:
            box = self.box(agent)
            read_ns = time.time_ns()
            with self.store.transaction():
                self.store.put_file(box, day, name, self.boxes[agent])
            self._racy[(box, day, name)] = read_ns

    def forget(self, entry: Entry) -> None:
        """Re-store one memory whose file no longer matches (or is gone)."""
        with self.lock, self.store.transaction():
            self.store.put_file(entry.box, entry.day, entry.name, self._mailbox(entry.box))

    def close(self) -> None:
        with self.lock:
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None
            self._validated_pid = 0
            self.store.close()

    def _validate(self) -> None:
        if self._watcher is not None and self._watcher.pid != os.getpid():
            self._watcher = None  # the parent's; its fd closes with the parent's object
        if self.watch and self._watcher is None:
            try:
                self._watcher = Watcher()
            except OSError:
                self.watch = False  # stat the folders instead
        changed = []
        for box in self._owners:
            changed += self._validate_box(box)
        self._store(changed)
        self.store.recount()
        self._validated_pid = os.getpid()

    def _validate_box(self, box: int) -> list[tuple[int, str, str]]:
        """Watch and scan every day of one mailbox; returns the files to store."""
        mailbox = self._mailbox(box)
        self._box_watched[box] = self._watcher is not None and self._watcher.add(mailbox, ("box", box))
        by_day: dict[str, dict[str, str]] = {}
        for (day, name), sig in self.store.sigs(box).items():
            by_day.setdefault(day, {})[name] = sig
        self._days[box], changed = {}, []
        for day in sorted(day_folders(mailbox)):  # oldest first: row ids then follow time
            changed += self._scan_day(box, day, by_day.pop(day, {}))
        for day in by_day:
            with self.store.transaction():
                self.store.forget_day(box, day)
        return changed

    def _scan_day(self, box: int, day: str, stored: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
        """List one day's memories and stat each; returns those that differ
        from the store. The folders are watched first, so nothing changed
        after the listing is missed."""
        mailbox = self._mailbox(box)
        day_dir = os.path.join(mailbox, day)
        folder = self.shelf.dir(mailbox, day)
        watched = False
        if self._watcher is not None and self._watcher.add(day_dir, ("day", box, day)):
            watched = self._watcher.add(folder, ("rem", box, day)) or not os.path.isdir(folder)
        scanned_ns = time.time_ns()
        dir_st = _stat(folder)
        files: dict[str, os.stat_result] = {}
        if dir_st is not None:
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if self.shelf.holds(entry.name) and _storable(entry.name):
                            try:
                                files[memory_name(entry.name)] = entry.stat()
                            except OSError:
                                pass
            except OSError:
                pass
        if stored is None:
            stored = self.store.sigs(box, day)
        changed = [n for n, st in files.items() if stored.get(n) != file_sig(st)]
        if not watched:  # a watch reports a later change; without one, look again later
            for name in changed:
                if _newest(files[name]) >= scanned_ns - RACY_NS and len(self._racy) < RACY_MAX:
                    self._racy[(box, day, name)] = scanned_ns
        if not os.path.isdir(day_dir):
            self._days[box].pop(day, None)
        else:
            self._days.setdefault(box, {})[day] = _Day(_dir_sig(dir_st), scanned_ns, len(files), watched)
        return [(box, day, n) for n in changed + [n for n in stored if n not in files]]

    def _store(self, keys: list[tuple[int, str, str]]) -> None:
        """Store these files as they are now, in transactions of BATCH; big
        batches read the next files in a thread while SQLite stores the last
        (both release the GIL), still inside the transaction."""
        for start in range(0, len(keys), BATCH):
            batch = keys[start:start + BATCH]
            with self.store.transaction():
                if len(batch) < 64:
                    for box, day, name in batch:
                        self.store.put_file(box, day, name, self._mailbox(box))
                    continue
                paths = [self.shelf.path(self._mailbox(b), d, n) for b, d, n in batch]
                chunks = [paths[i:i + 50] for i in range(0, len(paths), 50)]
                with ThreadPoolExecutor(1) as pool:
                    reads = (read for chunk in pool.map(_read_all, chunks) for read in chunk)
                    for (box, day, name), read in zip(batch, reads):
                        self.store.put_file(box, day, name, self._mailbox(box), read=read)

    def _apply(self, events: list) -> None:
        """Act on what the watches reported."""
        lost, days, files = set(), set(), set()
        for key, mask, name in events:
            if key[0] == "box":
                if mask & LOST:
                    lost.add(key[1])
                elif is_day(name):
                    days.add((key[1], name))
            elif key[0] == "day":
                if mask & LOST or name == self.shelf.folder:
                    days.add(key[1:])
            elif mask & LOST:
                days.add(key[1:])
            elif self.shelf.holds(name) and _storable(name):
                files.add((*key[1:], memory_name(name)))
        for box in lost:
            self._store(self._validate_box(box))
        for box, day in days - {(b, d) for b in lost for d in self._days.get(b, ())}:
            self._rescan(box, day)
        touched = [key for key in files if key[:2] not in days and key[0] not in lost]
        if touched:  # read them: a change within one tick of the last read leaves the stat alone
            read_ns = time.time_ns()
            with self.store.transaction():
                for box, day, name in touched:
                    self.store.put_file(box, day, name, self._mailbox(box), only_if_changed=True)
            self._racy.update(dict.fromkeys(touched, read_ns))

    def _rescan(self, box: int, day: str) -> None:
        if os.path.isdir(os.path.join(self._mailbox(box), day)):
            self._store(self._scan_day(box, day))
            return
        if self._watcher is not None:
            self._watcher.remove(("day", box, day))
            self._watcher.remove(("rem", box, day))
        with self.store.transaction():
            self.store.forget_day(box, day)
        self._days.get(box, {}).pop(day, None)

    def _poll(self) -> None:
        """Folders without a watch: stat them, rescan those that changed, and
        re-stat a rolling slice of their files for edits made in place."""
        steady = []
        for box, days in self._days.items():
            if not self._box_watched.get(box):
                if self._watcher is not None:  # e.g. the mailbox did not exist yet
                    self._box_watched[box] = self._watcher.add(self._mailbox(box), ("box", box))
                on_disk = set(day_folders(self._mailbox(box)))
                for day in (on_disk ^ set(days)):
                    self._rescan(box, day)
            for day, state in list(days.items()):
                if state.watched:
                    continue
                st = _stat(self.shelf.dir(self._mailbox(box), day))
                if state.sig != _dir_sig(st) or (st and _newest(st) >= state.scanned_ns - RACY_NS):
                    self._rescan(box, day)
                else:
                    steady.append((box, day, state.files))
        if not steady:
            return
        budget, start = SWEEP_FILES, self._cursor % len(steady)
        for i in range(len(steady)):
            if budget <= 0:
                break
            box, day, count = steady[(start + i) % len(steady)]
            self._rescan(box, day)
            budget -= max(1, count)
            self._cursor = start + i + 1

    def _recheck_racy(self) -> None:
        """Files changed lately: store them when their stat moved, and read
        them once more if our last read was too close to their last change
        for their stat to tell a later change apart (coarse file times)."""
        if not self._racy:
            return
        now, todo, settled = time.time_ns(), [], []
        for key, read_ns in self._racy.items():
            box, day, name = key
            st = _stat(self.shelf.path(self._mailbox(box), day, name))
            if st is None or file_sig(st) != self.store.sig(box, day, name):
                todo.append(key)
                if st is None or _newest(st) < now - RACY_NS:
                    settled.append(key)
            elif _newest(st) < read_ns - RACY_NS:
                settled.append(key)  # read long enough after its last change
            elif _newest(st) < now - RACY_NS:
                todo.append(key)
                settled.append(key)
        if todo:
            with self.store.transaction():
                for box, day, name in todo:
                    self.store.put_file(box, day, name, self._mailbox(box), only_if_changed=True)
                    self._racy[(box, day, name)] = now
        for key in settled:
            del self._racy[key]

    # -- questions ---------------------------------------------------------------
    def search(self, terms: list[str], agents: list[str] | None, limit: int) -> list[Entry]:
        """Best first; equal scores (to 9 digits) go to the newer memory."""
        with self.lock:
            hits = self.store.search(terms, self.scope(agents), limit * 2 + 10)
        hits.sort(key=lambda e: (round(e.score, 9), e.day, e.mtime_ns), reverse=True)
        return hits[:limit]

    def newest(self, agents: list[str] | None, limit: int | None) -> list[Entry]:
        with self.lock:
            return self.store.newest(self.scope(agents), limit)

    def latest(self, agent: str) -> Entry | None:
        with self.lock:
            return self.store.latest(self.box(agent))

    def invalidate(self) -> None:
        """Validate everything again on the next refresh."""
        self._validated_pid = 0

    def counts(self, agents: list[str] | None = None) -> dict[str, int]:
        with self.lock:
            found = self.store.counts(self.scope(agents))
            return {a: found.get(self.box(a), 0) for a in (self.boxes if agents is None else agents)}
