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
from datetime import datetime
from pathlib import Path
from typing import Iterator

from .journal import parse_line
from .status import _alive

POLL_SECONDS = 0.5
ALIVE_SECONDS = 2.0  # how often an idle follower checks that the writer still runs


@dataclass
class JournalTail:
    """The events added to a journal file since the last ``read``."""

    path: Path
    offset: int = 0
    _file_id: tuple | None = None
    _seen: set = field(default_factory=set)  # digests of the lines passed on

    def read(self) -> list[dict]:
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
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(st.st_size - self.offset)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        events = []
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            digest = hashlib.blake2b(line, digest_size=12).digest()
            if digest in self._seen:
                continue
            self._seen.add(digest)
            event = parse_line(line)
            if event is not None:
                events.append(event)
        return events


@dataclass
class Follower:
    """Yields a journal's events as its run writes them (``events``); ``ended``
    says why it stopped: "finished" (the run's ``run_end``, whatever its
    reason) or "gone" (the writing process ended without one)."""

    tail: JournalTail
    poll: float = POLL_SECONDS
    ended: str = ""
    run_start: dict = field(default_factory=dict)  # of the session being followed

    def events(self) -> Iterator[dict]:
        checked = time.monotonic()
        while True:
            batch = self.tail.read()
            done = False
            for event in batch:
                yield event
                kind = event.get("event")
                if kind == "run_start":  # a resumed session goes on after an earlier one's run_end
                    self.run_start, done = event, False
                elif kind == "run_end" and event.get("run") == self.run_start.get("run"):
                    done = True
            if done:
                self.ended = "finished"
                return
            if batch:
                checked = time.monotonic()
            elif time.monotonic() - checked >= ALIVE_SECONDS:
                checked = time.monotonic()
                if self.run_start and _alive(self.run_start.get("pid"), str(self.run_start.get("host") or ""),
                                             _time(self.run_start.get("time"))) is False:
                    self.ended = "gone"
                    return
            time.sleep(self.poll)


def _time(value) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None
