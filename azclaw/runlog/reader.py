"""A run's journal read once, for ``status``, ``report`` and ``show``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import RunState
from ..errors import ConfigError
from ..turn import Turn
from .journal import SUFFIX, current_run, read_journal, retried_turns, unique_turns


@dataclass
class RunLog:
    """The events of the newest run in a journal (since its last fresh
    start), with its turns and probe answers as ``Turn`` records."""

    path: Path
    events: list[dict] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)  # the last of each (round, agent), by round
    probes: list[dict] = field(default_factory=list)  # probe answers, the last of each (round, agent, question)
    retried: list[Turn] = field(default_factory=list)  # attempts of rounds that ran again

    @classmethod
    def read(cls, log_dir: str | Path) -> "RunLog":
        """The newest journal in ``log_dir`` (or the journal file given)."""
        path = find_journal(log_dir)
        return cls.of(read_journal(path), path)

    @classmethod
    def of(cls, all_events: list[dict], path: Path) -> "RunLog":
        events = current_run(all_events)
        retried = [Turn.from_dict(e).retry() for e in retried_turns(events)]
        return cls(Path(path), events, [Turn.from_dict(e) for e in unique_turns(events)], probe_answers(events),
                   retried)

    def state(self) -> RunState:
        """What the journal's turns and probe answers add up to (no history
        and no round: the journal does not say which rounds were folded in)."""
        state = RunState()
        for turn in self.retried + self.turns:
            state.stats.add(turn)
        for answer in self.probes:
            state.stats.add(Turn.from_dict({**answer, "event": "probe"}))
            state.probe_answers.append({k: answer.get(k) for k in ("round", "agent", "question", "answer",
                                                                    "correct")})
        return state


def find_journal(log_dir: str | Path) -> Path:
    """The newest ``*_journal.jsonl`` in ``log_dir`` (or the file itself)."""
    path = Path(log_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(f"{path}: no such folder (give the run's --log-dir)")
    journals = [p for p in path.glob(f"*{SUFFIX}") if p.is_file()]
    if not journals:
        raise ConfigError(f"{path}: no run journal here (looked for *{SUFFIX}); "
                          "start a run with azclaw run, or give its --log-dir")
    return max(journals, key=lambda p: p.stat().st_mtime)


def probe_answers(events: list[dict]) -> list[dict]:
    """Probe answers, the last one per (round, agent, question), as their
    journal lines (``answer`` holds the text)."""
    answers: dict[tuple, dict] = {}
    for e in events:
        if e.get("event") == "probe":
            answer = dict(e)
            answer.setdefault("answer", e.get("text", ""))
            answers[(e.get("round"), e.get("agent"), e.get("question"))] = answer
    return sorted(answers.values(), key=lambda a: int(a.get("round") or 0))
