"""``azclaw show``: what the team said, round by round, from the journal;
with ``follow``, as the run goes (like ``tail -f``) until it ends."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from ..errors import ConfigError
from ..events import FinishChecked, ProbeAnswered, RoundProgress, RunFinished, RunStarted, TurnFinished
from ..progress import describe
from ..safetext import one_line
from ..turn import Turn
from .live import POLL_SECONDS, Follower, JournalTail
from .reader import Logged, events, find_journal
from .transcript import Selection, probe_text, round_header, turn_text


@dataclass
class Shown:
    """What ``show`` printed: turns and probe answers, and why following ended
    ("" without ``follow``; else "finished" or "gone", see ``Follower``)."""

    items: int = 0
    ended: str = ""
    journal: Path | None = None


class TranscriptPrinter:
    """Prints turns and probe answers under a header for each round."""

    def __init__(self, out: TextIO, selection: Selection, tools: bool):
        self.out, self.selection, self.tools = out, selection, tools
        self.last_round = 0  # of the run, for "round 3/20"
        self.shown_round: int | None = None
        self.items = 0

    def turn(self, turn: Turn) -> None:
        if turn in self.selection:
            self._header(turn.round, turn.phase)
            self._write(turn_text(turn, self.tools))

    def probe(self, answer: dict) -> None:
        probe = Turn(str(answer.get("agent") or ""), int(answer.get("round") or 0))
        if probe in self.selection:
            self._header(probe.round, answer.get("phase") if isinstance(answer.get("phase"), str) else None)
            self._write(probe_text(answer))

    def progress(self, event: RoundProgress) -> None:
        """What a round got done, after its turns."""
        if (self.selection.first is None or event.round >= self.selection.first) and (
                self.selection.last is None or event.round <= self.selection.last):
            self.note(f"round {event.round}: {describe(event)}")

    def check(self, event: FinishChecked) -> None:
        if (self.selection.first is None or event.round >= self.selection.first) and (
                self.selection.last is None or event.round <= self.selection.last):
            self.note(f"finish check after round {event.round}: `{event.command}` "
                      f"{'passed' if event.ok else 'failed'} ({event.status})")

    def ended(self, event: RunFinished) -> None:
        detail = f": {event.ending.detail}" if event.ending.detail and event.ending.reason != "max_rounds" else ""
        self.note(f"the run ended ({event.ending.reason}) after round {event.round}{detail}")

    def note(self, text: str) -> None:
        self.out.write(f"--- {one_line(text)} ---\n\n")
        self.out.flush()
        self.shown_round = None  # the next turn names its round again

    def event(self, logged: Logged) -> None:
        """One journal event of a live run."""
        event = logged.event
        if isinstance(event, TurnFinished):
            self.turn(event.turn)
        elif isinstance(event, ProbeAnswered):
            self.probe(event.row())
        elif isinstance(event, RunStarted):
            self.last_round = event.last_round or self.last_round
            if event.resumed_from is not None:
                self.note(f"the run resumed after its round {event.resumed_from}: the rest runs now")
            else:
                self.note(f"a new run started: {event.title or event.topic}".rstrip(": "))
        elif isinstance(event, RoundProgress):
            self.progress(event)
        elif isinstance(event, FinishChecked):
            self.check(event)
        elif isinstance(event, RunFinished):
            self.ended(event)

    def _header(self, round_no: int, phase: str | None) -> None:
        if round_no != self.shown_round:
            self.out.write(round_header(round_no, self.last_round, phase) + "\n\n")
            self.shown_round = round_no

    def _write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()  # a follower prints each turn as it comes
        self.items += 1


def show(log_dir: str | Path, out: TextIO, selection: Selection = Selection(), tools: bool = False,
         follow: bool = False, waiting: Callable[[str], None] | None = None,
         poll: float = POLL_SECONDS) -> Shown:
    """Print the transcript of the newest run in ``log_dir`` to ``out``.
    With ``follow``, keep printing as the run goes until it ends; if there
    is no journal yet, wait for one (``waiting`` is told once)."""
    path = _journal(log_dir, follow, waiting, poll)
    index = _index(path)
    _check(selection, index, path)
    printer = TranscriptPrinter(out, selection, tools)
    printer.last_round = index.start.last_round if index.start else 0
    tail = JournalTail(path)
    for logged in tail.stream():  # the journal read as a stream: memory stays small however long the run
        if logged.offset not in index.shown:
            continue
        if isinstance(logged.event, TurnFinished):
            printer.turn(logged.event.turn)
        elif isinstance(logged.event, ProbeAnswered):
            printer.probe(logged.event.row())
        elif isinstance(logged.event, RoundProgress):
            printer.progress(logged.event)
        elif isinstance(logged.event, FinishChecked):
            printer.check(logged.event)
    if index.end is not None and not follow:
        printer.ended(index.end)
    shown = Shown(journal=path)
    if follow and not index.ended:
        start = index.start_logged
        follower = Follower(tail, poll=poll, run_start=start)
        for logged in follower.events():
            printer.event(logged)
        if follower.ended == "gone":
            pid = follower.run_start.event.pid if follower.run_start else None
            printer.note(f"the run's process (pid {pid}) ended without finishing (killed?); continue it with "
                         "azclaw run --resume")
        shown.ended = follower.ended
    shown.items = printer.items
    return shown


@dataclass
class _Index:
    """What a first pass over a journal tells: the lines to show (the last
    attempt of each turn and probe answer of the newest run), its start,
    its agents, and whether its newest session has ended."""

    shown: set = field(default_factory=set)
    start: RunStarted | None = None
    start_logged: Logged | None = None
    agents: list = field(default_factory=list)
    ended: bool = False
    end: RunFinished | None = None  # how the newest session ended


def _index(path: Path) -> _Index:
    last: dict[tuple, int] = {}
    index = _Index()
    for logged in events(path):
        event = logged.event
        if isinstance(event, RunStarted):
            if event.resumed_from is None:
                last.clear()
            index.start, index.start_logged, index.ended, index.end = event, logged, False, None
        elif isinstance(event, RunFinished) and index.start_logged and logged.session == index.start_logged.session:
            index.ended, index.end = True, event
        elif isinstance(event, TurnFinished):
            last[("turn", event.turn.round, event.turn.agent)] = logged.offset
        elif isinstance(event, ProbeAnswered):
            last[("probe", event.turn.round, event.turn.agent, event.question)] = logged.offset
        elif isinstance(event, RoundProgress):
            last[("progress", event.round)] = logged.offset
        elif isinstance(event, FinishChecked):
            last[("check", event.round, logged.offset)] = logged.offset
    index.shown = set(last.values())
    agents = list(index.start.agents) if index.start else []
    index.agents = agents + sorted({k[2] for k in last if k[0] == "turn"} - set(agents))
    return index


def _journal(log_dir: str | Path, follow: bool, waiting, poll: float) -> Path:
    try:
        return find_journal(log_dir)
    except ConfigError:
        if not follow or not Path(log_dir).is_dir():
            raise
    if waiting:
        waiting(f"no run in {log_dir} yet; waiting for one to start (Ctrl+C to stop)")
    while True:
        time.sleep(poll)
        try:
            return find_journal(log_dir)
        except ConfigError:
            continue


def _check(selection: Selection, index: _Index, path: Path) -> None:
    """An agent that is not in the run, or rounds outside it, is a typo."""
    if selection.agent is not None and index.agents and selection.agent not in index.agents:
        raise ConfigError(f"--agent {selection.agent}: no such agent in this run ({path}); "
                          f"its agents: {', '.join(index.agents)}")
    last = index.start.last_round if index.start else 0
    if last and selection.first is not None and selection.first > last:
        raise ConfigError(f"--round {selection.first}: the run in {path} has rounds 1 to {last}")


def parse_rounds(value: str) -> tuple[int, int]:
    """``N`` or ``A-B`` (rounds A to B)."""
    first, sep, last = value.partition("-")
    try:
        lo, hi = int(first), int(last) if sep else int(first)
    except ValueError:
        raise ConfigError(f"--round {value}: expected a round number N or a range A-B") from None
    if lo < 1 or hi < lo:
        raise ConfigError(f"--round {value}: expected rounds from 1 up, the first not after the last")
    return lo, hi

