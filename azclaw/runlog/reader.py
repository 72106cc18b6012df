"""Reading a run's journal back: lines as typed events, read as a stream in
bounded memory, and the newest run folded once (``RunLog``) for
``status``, ``report``, ``show`` and ``bench``.

A line that is torn, not valid UTF-8, not JSON, longer than ``MAX_LINE``
or of a kind this version does not know is skipped; nothing a journal
holds makes a reader raise. Lone surrogates (``\\ud800``) read back as
U+FFFD, so what is read can always be printed.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError
from ..events import (CheckpointWritten, Event, FinishChecked, ProbeAnswered, RoundFinished, RoundProgress,
                      RunFinished, RunStarted, RunWarning, StopAsked, ToolModeChanged, TurnFinished, TurnStarted,
                      parse)
from ..options import JOURNAL_SUFFIX
from ..state import RunState
from ..turn import Turn

MAX_LINE = 64 << 20  # a longer line is not one a run wrote: skipped, without reading it whole
TEXT_CHARS = 4 << 20  # of turn texts a RunLog keeps (the newest rounds'); older ones point to ``azclaw show``
_CHUNK = 1 << 20
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Logged:
    """One journal line: its event, when (ISO-8601) and which session wrote it."""

    event: Event
    time: str = ""
    session: str = ""
    offset: int = 0  # where the line starts in the file


def parse_line(line: bytes | str, offset: int = 0) -> Logged | None:
    """One journal line as a ``Logged`` event, or None."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    if "\\ud" in line or "\\uD" in line:  # an escaped lone surrogate: make it printable
        record = _clean(record)
    if "round" in record and (not isinstance(record["round"], int) or isinstance(record["round"], bool)):
        return None  # edited by hand into something no reader can place
    event = parse(record)
    if event is None:
        return None
    return Logged(event, str(record.get("time") or ""), str(record.get("run") or ""), offset)


def _clean(value):
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def open_journal(path: Path):
    """A journal opened for reading: a regular file, never a FIFO or a device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the journal ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"{path}: not a regular file; a journal is a file a run wrote")
    return os.fdopen(fd, "rb")


def lines(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """The complete lines of a journal from byte ``start``, with their offsets;
    a line longer than ``MAX_LINE`` is skipped without holding it."""
    fh = open_journal(path)
    if fh is None:
        return
    with fh:
        fh.seek(start)
        offset, pending, skipping = start, b"", False
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                return  # a last line without its newline is torn: left for the next read
            while chunk:
                cut = chunk.find(b"\n")
                if cut < 0:
                    if not skipping:
                        pending += chunk
                        if len(pending) > MAX_LINE:
                            pending, skipping = b"", True
                    offset += len(chunk)
                    break
                piece, chunk = chunk[:cut], chunk[cut + 1:]
                line_start = offset - len(pending)
                offset += cut + 1
                if not skipping and len(pending) + len(piece) <= MAX_LINE:
                    yield line_start, pending + piece
                pending, skipping = b"", False


def events(path: Path, start: int = 0) -> Iterator[Logged]:
    """The journal's events, in order, read as a stream."""
    for offset, line in lines(path, start):
        if line.strip():
            logged = parse_line(line, offset)
            if logged is not None:
                yield logged


@dataclass
class RunLog:
    """The newest run of a journal (since its last fresh start), folded once.

    ``state`` is what the run's turns add up to (``RunState.apply``, as the
    run itself folds them); ``turns`` the last attempt of each (round,
    agent), by round; ``retried`` the attempts that a rerun replaced;
    ``probes`` the probe answers. Turn texts are kept for the newest rounds
    up to ``TEXT_CHARS`` characters; with ``texts=False`` none are kept."""

    path: Path
    starts: list[Logged] = field(default_factory=list)  # RunStarted, one per session
    ends: dict[str, Logged] = field(default_factory=dict)  # session -> its RunFinished
    stops: dict[str, StopAsked] = field(default_factory=dict)  # journals before version 4
    state: RunState = field(default_factory=lambda: RunState(keep=0))  # the texts are in ``turns``
    turns: list[Turn] = field(default_factory=list)
    retried: list[Turn] = field(default_factory=list)
    probes: list[ProbeAnswered] = field(default_factory=list)
    warnings: list[Logged] = field(default_factory=list)
    tool_modes: list[ToolModeChanged] = field(default_factory=list)
    rounds_done: list[int] = field(default_factory=list)  # RoundFinished, in order
    begun: dict[tuple, str] = field(default_factory=dict)  # (session, round, agent) -> turn_start time, open turns
    walls: dict[tuple, float] = field(default_factory=dict)  # (round, agent) -> seconds from turn_start to turn
    checkpoints: list[int] = field(default_factory=list)
    last_time: str = ""
    last_seen: dict[str, str] = field(default_factory=dict)  # session -> the time of its last line
    texts_cut: int = 0  # turns whose text was left out to bound memory
    progress: dict[int, RoundProgress] = field(default_factory=dict)  # round -> what it got done
    checks: list[FinishChecked] = field(default_factory=list)  # the finish line's check runs

    @property
    def start(self) -> RunStarted | None:
        return self.starts[-1].event if self.starts else None

    @property
    def first(self) -> RunStarted | None:
        return self.starts[0].event if self.starts else None

    @property
    def team(self) -> list[str]:
        start = self.start
        names = list(start.agents) if start else []
        return names + sorted({t.agent for t in self.turns} - set(names))

    @classmethod
    def read(cls, log_dir: str | Path, texts: bool = True) -> "RunLog":
        """The newest journal in ``log_dir`` (or the journal file given)."""
        path = find_journal(log_dir)
        return cls.of(events(path), path, texts)

    @classmethod
    def of(cls, logged, path: Path, texts: bool = True) -> "RunLog":
        run = cls(Path(path))
        for item in logged:
            run.add(item, texts)
        run.finish(texts)
        return run

    # -- the fold ----------------------------------------------------------------
    def add(self, item: Logged, texts: bool = True) -> None:
        event = item.event
        if isinstance(event, RunStarted) and event.resumed_from is None:
            self.__init__(self.path)  # a fresh run: what came before belongs to another run
        self.last_time = item.time or self.last_time
        self.last_seen[item.session] = item.time or self.last_seen.get(item.session, "")
        if isinstance(event, RunStarted):
            self.starts.append(item)
        elif isinstance(event, RunFinished):
            self.ends[item.session] = item
        elif isinstance(event, StopAsked):
            self.stops[item.session] = event
        elif isinstance(event, TurnStarted):
            self.begun[(item.session, event.round, event.agent)] = item.time
        elif isinstance(event, TurnFinished):
            began = self.begun.pop((item.session, event.turn.round, event.turn.agent), None)
            if began:
                self.walls[(event.turn.round, event.turn.agent)] = _seconds(began, item.time)
            if not texts:  # status: the counts, the errors and a line of the text are all it shows
                _strip(event.turn)
                event.turn.text = event.turn.text[:200]
        elif isinstance(event, RunWarning):
            self.warnings.append(item)
        elif isinstance(event, ToolModeChanged):
            self.tool_modes.append(event)
        elif isinstance(event, RoundFinished):
            self.rounds_done.append(event.round)
        elif isinstance(event, CheckpointWritten):
            self.checkpoints.append(event.round)
        elif isinstance(event, RoundProgress):
            self.progress[event.round] = event
        elif isinstance(event, FinishChecked):
            self.checks.append(event)
        if isinstance(event, TurnFinished):
            self._attempts.setdefault((event.turn.round, event.turn.agent), []).append(event.turn)
            self._hold(event.turn)
        elif isinstance(event, ProbeAnswered):
            self._probes[(event.turn.round, event.turn.agent, event.question)] = event
        self.state.apply(event)

    def __post_init__(self):
        self._attempts: dict[tuple, list[Turn]] = {}
        self._probes: dict[tuple, ProbeAnswered] = {}
        self._held: deque[Turn] = deque()  # turns whose texts are kept, oldest first
        self._chars = 0

    def _hold(self, turn: Turn) -> None:
        """Keep the texts of the newest turns within ``TEXT_CHARS`` while reading."""
        self._chars += _size(turn)
        self._held.append(turn)
        while self._chars > TEXT_CHARS and len(self._held) > 1:
            old = self._held.popleft()
            self._chars -= _size(old)
            if old.text:
                old.text = (f"[text left out of this page to keep it small: azclaw show --round {old.round} "
                            f"--agent {old.agent}]")
            _strip(old)
            self.texts_cut += 1

    def finish(self, texts: bool = True) -> None:
        ordered = sorted(self._attempts.items(), key=lambda kv: kv[0][0])
        self.turns = [attempts[-1] for _, attempts in ordered]
        self.retried = [t for _, attempts in ordered for t in attempts[:-1]]
        for turn in self.retried:
            turn.retried = True
        self.probes = sorted(self._probes.values(), key=lambda p: p.turn.round)

    # -- what it says ----------------------------------------------------------------
    def ending(self, session: str | None = None) -> RunFinished | None:
        """How the newest session (or ``session``) ended; None while it runs or after a kill."""
        if session is None and self.starts:
            session = self.starts[-1].session
        found = self.ends.get(session or "")
        return found.event if found else None

    def phase_at(self, round_no: int) -> str | None:
        start = self.start
        found = start.phase_at(round_no) if start else None
        return found or next((t.phase for t in reversed(self.turns) if t.round == round_no), None)


def _strip(turn: Turn) -> None:
    for use in turn.calls:
        use.arguments = use.result = ""


def _size(turn: Turn) -> int:
    return len(turn.text) + sum(len(u.arguments) + len(u.result) for u in turn.calls)


def _seconds(begin: str, end: str) -> float:
    from datetime import datetime
    try:
        return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(begin)).total_seconds())
    except ValueError:
        return 0.0


def find_journal(log_dir: str | Path) -> Path:
    """The newest ``*_journal.jsonl`` in ``log_dir`` (or the file itself)."""
    path = Path(log_dir)
    if path.is_file() or (path.exists() and not path.is_dir()):
        return path
    if not path.is_dir():
        raise ConfigError(f"{path}: no such folder (give the run's --log-dir)")
    journals = [p for p in path.glob(f"*{JOURNAL_SUFFIX}") if p.is_file()]
    if not journals:
        raise ConfigError(f"{path}: no run journal here (looked for *{JOURNAL_SUFFIX}); "
                          "start a run with azclaw run, or give its --log-dir")
    return max(journals, key=lambda p: p.stat().st_mtime)
