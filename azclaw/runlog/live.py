"""Following a journal while its run writes it, like ``tail -f``.

``JournalTail`` reads only what was added since its last read (it keeps
the byte offset). The journal is not only appended to: a resume rewrites
it atomically without the rounds it redoes, and a fresh run renames it
away and starts a new file. Both show as a new file at the same path (or
a shorter one); the tail then reads it again from the start and passes on
only the lines it has not passed on before.

``follow`` yields the events of a live run until its ``run_end``, or until
the process that writes it is gone without one (killed).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..events import RunFinished, RunStarted
from .reader import Logged, lines, parse_line
from .common import alive, when

POLL_SECONDS = 0.5
ALIVE_SECONDS = 2.0  # how often an idle follower checks that the writer still runs


@dataclass
class JournalTail:
    """The events added to a journal file since the last ``read``."""

    path: Path
    offset: int = 0
    _file_id: tuple | None = None
    _seen: set = field(default_factory=set)  # digests of the lines passed on

    def stream(self):
        """Every event of the file as it is now, from the start, read as a
        stream; what ``read`` later passes on starts after it."""
        self._seen.clear()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        self._file_id, self.offset = (st.st_dev, st.st_ino), 0
        for offset, line in lines(self.path):
            self.offset = offset + len(line) + 1
            if not line.strip():
                continue
            self._seen.add(hashlib.blake2b(line, digest_size=12).digest())
            logged = parse_line(line, offset)
            if logged is not None:
                yield logged

    def read(self) -> list[Logged]:
        """New complete lines, parsed; a torn last line waits for its end."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []  # between a fresh run's rename and its first line
        file_id = (st.st_dev, st.st_ino)
        if file_id != self._file_id or st.st_size < self.offset:
            self._file_id, self.offset = file_id, 0  # replaced: read it again, skip what was passed on
        if st.st_size == self.offset:
            return []
        events = []
        for offset, line in lines(self.path, self.offset):
            self.offset = offset + len(line) + 1
            if not line.strip():
                continue
            digest = hashlib.blake2b(line, digest_size=12).digest()
            if digest in self._seen:
                continue
            self._seen.add(digest)
            logged = parse_line(line, offset)
            if logged is not None:
                events.append(logged)
        return events


@dataclass
class Follower:
    """Yields a journal's events as its run writes them (``events``); ``ended``
    says why it stopped: "finished" (the run's ``run_end``, whatever its
    reason) or "gone" (the writing process ended without one)."""

    tail: JournalTail
    poll: float = POLL_SECONDS
    ended: str = ""
    run_start: Logged | None = None  # of the session being followed

    def events(self) -> Iterator[Logged]:
        checked = time.monotonic()
        while True:
            batch = self.tail.read()
            done = False
            for logged in batch:
                yield logged
                if isinstance(logged.event, RunStarted):  # a resumed session goes on after an earlier one's end
                    self.run_start, done = logged, False
                elif isinstance(logged.event, RunFinished) and self.run_start is not None \
                        and logged.session == self.run_start.session:
                    done = True
            if done:
                self.ended = "finished"
                return
            if batch:
                checked = time.monotonic()
            elif time.monotonic() - checked >= ALIVE_SECONDS:
                checked = time.monotonic()
                start = self.run_start
                if start is not None and alive(start.event.pid, start.event.host, when(start.time)) is False:
                    self.ended = "gone"
                    return
            time.sleep(self.poll)
