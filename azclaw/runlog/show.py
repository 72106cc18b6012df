"""``azclaw show``: what the team said, round by round, from the journal;
with ``follow``, as the run goes (like ``tail -f``) until it ends."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

from ..errors import ConfigError
from ..safetext import one_line
from ..turn import Turn
from .live import POLL_SECONDS, Follower, JournalTail
from .reader import RunLog, find_journal
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

    def note(self, text: str) -> None:
        self.out.write(f"--- {one_line(text)} ---\n\n")
        self.out.flush()
        self.shown_round = None  # the next turn names its round again

    def event(self, event: dict) -> None:
        """One journal event of a live run."""
        kind = event.get("event")
        if kind == "turn":
            self.turn(Turn.from_dict(event))
        elif kind == "probe":
            answer = dict(event)
            answer.setdefault("answer", event.get("text", ""))
            self.probe(answer)
        elif kind == "run_start":
            self.last_round = _int(event.get("last_round")) or self.last_round
            if event.get("resumed_from") is not None:
                self.note(f"the run resumed from its round {event.get('resumed_from')}: later rounds run again")
            else:
                self.note(f"a new run started: {event.get('title') or event.get('topic') or ''}".rstrip(": "))
        elif kind == "run_end":
            self.note(f"the run ended ({event.get('reason', 'finished')}) after round {event.get('round')}")

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
    tail = JournalTail(path)
    run = RunLog.of(tail.read(), path)
    _check(selection, run)
    printer = TranscriptPrinter(out, selection, tools)
    start = next((e for e in reversed(run.events) if e.get("event") == "run_start"), {})
    printer.last_round = _int(start.get("last_round"))
    probes: dict[int, list[dict]] = {}
    for answer in run.probes:
        probes.setdefault(int(answer.get("round") or 0), []).append(answer)
    for n, turn in enumerate(run.turns):
        printer.turn(turn)
        if n + 1 == len(run.turns) or run.turns[n + 1].round != turn.round:
            for answer in probes.pop(turn.round, []):
                printer.probe(answer)
    for round_no in sorted(probes):
        for answer in probes[round_no]:
            printer.probe(answer)
    shown = Shown(journal=path)
    if follow and not any(e.get("event") == "run_end" and e.get("run") == start.get("run") for e in run.events):
        follower = Follower(tail, poll=poll, run_start=start)
        for event in follower.events():
            printer.event(event)
        if follower.ended == "gone":
            printer.note(f"the run's process (pid {follower.run_start.get('pid')}) ended without finishing "
                         "(killed?); continue it with azclaw run --resume")
        shown.ended = follower.ended
    shown.items = printer.items
    return shown


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


def _check(selection: Selection, run: RunLog) -> None:
    """An agent that is not in the run, or rounds outside it, is a typo."""
    start = next((e for e in reversed(run.events) if e.get("event") == "run_start"), {})
    team = [str(a) for a in start.get("agents") or []]
    team += sorted({t.agent for t in run.turns} - set(team))
    if selection.agent is not None and team and selection.agent not in team:
        raise ConfigError(f"--agent {selection.agent}: no such agent in this run ({run.path}); "
                          f"its agents: {', '.join(team)}")
    last = _int(start.get("last_round"))
    if last and selection.first is not None and selection.first > last:
        raise ConfigError(f"--round {selection.first}: the run in {run.path} has rounds 1 to {last}")


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


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
