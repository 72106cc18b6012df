"""Run events: what happened during a run, as values.

The round loop emits these and does nothing else with them. The journal,
the console and the live status line are subscribers, and so are the
watchers that measure progress, notice loops and keep budgets; a program
adds its own with ``Orchestrator(..., observers=[...])``. An observer is a
callable that takes an event; it may return an action (``Stop``,
``Nudge``, ``Skip``), an event for the run to tell (a ``RunWarning``), or a
list of them; the loop carries them out between turns::

    from azclaw import Orchestrator, Stop
    from azclaw.events import TurnFinished

    def watch(event):
        if isinstance(event, TurnFinished):
            print(event.turn.agent, event.turn.tool_calls)
            if "DONE" in event.turn.text:
                return Stop("done", f"{event.turn.agent} said DONE")

Every event with a journal line has a ``kind`` (its ``event`` field in the
journal, see ``runlog/journal.py``), ``to_dict()`` (the line's fields) and
``from_dict()`` (a line of any journal version read back; what is missing
or of the wrong type reads as empty, never raises). ``parse`` turns a
journal line into an event.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Union

from .stats import RunStats
from .topic import Phase, phase_at
from .numbers import number, whole
from .turn import Turn

log = logging.getLogger("azclaw")

# Why a run ended: one of these, everywhere (journal, status, report, exit code).
REASONS = ("done", "max_rounds", "budget", "loop", "no_progress", "stopped", "signal", "failed_rounds", "error")
# the reasons of journals before version 4
_OLD_REASONS = {"finished": "max_rounds", "aborted": "failed_rounds", "interrupted": "signal"}


@dataclass(frozen=True)
class Ending:
    """Why a run ended: ``reason`` (one of ``REASONS``), a line for people
    (``detail``: "STOP file ./STOP", "tokens: 1,000,412 of 1,000,000") and
    the figures behind it (``figures``: the budget, the limit and the use)."""

    reason: str
    detail: str = ""
    figures: dict = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        return f"{self.reason} ({self.detail})" if self.detail else self.reason

    @classmethod
    def read(cls, reason: Any, detail: Any = "", figures: Any = None) -> "Ending":
        text = str(reason or "")
        return cls(_OLD_REASONS.get(text, text) or "error", str(detail or ""),
                   dict(figures) if isinstance(figures, dict) else {})


# -- actions an observer may return ---------------------------------------

@dataclass(frozen=True)
class Stop:
    """End the run after the current turn, for ``reason`` (one of ``REASONS``)."""

    reason: str
    detail: str = ""
    figures: dict = field(default_factory=dict, compare=False)

    @property
    def ending(self) -> Ending:
        return Ending(self.reason, self.detail, dict(self.figures))


@dataclass(frozen=True)
class Nudge:
    """Put ``text`` into ``agent``'s next prompt (once)."""

    agent: str
    text: str


@dataclass(frozen=True)
class Skip:
    """Leave ``agent`` out of the next ``rounds`` rounds, saying ``why``."""

    agent: str
    rounds: int = 1
    why: str = ""


Action = Union[Stop, Nudge, Skip]
Observer = Callable[["Event"], Union[None, Action, list]]


# -- the events ---------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """Base of the run's events."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("journal", True)}

    @classmethod
    def from_dict(cls, data: dict) -> "Event":
        values = {}
        for f in fields(cls):
            if not f.metadata.get("journal", True) or f.name not in data:
                continue
            value = data[f.name]
            if f.type == "int":
                value = whole(value)
            elif f.type == "str":
                value = value if isinstance(value, str) else ""
            values[f.name] = value
        return cls(**values)


def _local(default: Any = None, factory: Any = None):
    """A field the running process has but the journal does not keep."""
    if factory is not None:
        return field(default_factory=factory, compare=False, metadata={"journal": False})
    return field(default=default, compare=False, metadata={"journal": False})


@dataclass(frozen=True)
class RunStarted(Event):
    """A run (or a resumed session of one) began; ``stats`` are the totals it takes up."""

    kind: ClassVar[str] = "run_start"
    topic: str = ""
    title: str = ""
    first_round: int = 1
    last_round: int = 0
    agents: tuple = ()
    context: str = "memory"
    context_budget: int = 0
    resumed_from: int | None = None
    pid: int | None = None
    host: str = ""
    sandbox: str = ""
    phases: tuple = ()  # Phase values (name, start, end)
    probes: tuple = ()  # {after_round, question, expect}
    stats: RunStats = _local(factory=RunStats)

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["agents"] = list(self.agents)
        data["phases"] = [{"name": p.name, "rounds": [p.start, p.end]} for p in self.phases]
        data["probes"] = [dict(p) for p in self.probes]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RunStarted":
        phases = []
        for p in data.get("phases") if isinstance(data.get("phases"), list) else []:
            try:
                start, end = p["rounds"]
                phases.append(Phase(name=str(p["name"]), start=int(start), end=int(end)))
            except (KeyError, TypeError, ValueError):
                continue
        agents = data.get("agents") if isinstance(data.get("agents"), list) else []
        probes = data.get("probes") if isinstance(data.get("probes"), list) else []
        resumed = data.get("resumed_from")
        pid = data.get("pid")
        return cls(topic=_text(data.get("topic")), title=_text(data.get("title")),
                   first_round=whole(data.get("first_round")) or 1, last_round=whole(data.get("last_round")),
                   agents=tuple(str(a) for a in agents), context=_text(data.get("context")) or "memory",
                   context_budget=whole(data.get("context_budget")),
                   resumed_from=whole(resumed) if isinstance(resumed, int) and not isinstance(resumed, bool) else None,
                   pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
                   host=_text(data.get("host")), sandbox=_text(data.get("sandbox")), phases=tuple(phases),
                   probes=tuple(p for p in probes if isinstance(p, dict)))

    def phase_at(self, round_no: int) -> str | None:
        found = phase_at(self.phases, round_no)
        return found.name if found else None


@dataclass(frozen=True)
class TurnStarted(Event):
    """An agent's turn began (its ``TurnFinished`` follows when it ends)."""

    kind: ClassVar[str] = "turn_start"
    round: int = 0
    agent: str = ""
    tools: tuple = _local(())  # the names of the tools it is offered


@dataclass(frozen=True)
class ReplyProgress(Event):
    """A streamed reply is coming in (``progress``: seconds, tokens, the tool
    being called); not journaled, for live displays."""

    kind: ClassVar[str] = ""
    round: int = 0
    agent: str = ""
    progress: Any = None


@dataclass(frozen=True)
class TurnFinished(Event):
    """An agent's turn ended: ``turn`` says what it did and cost."""

    kind: ClassVar[str] = "turn"
    turn: Turn = field(default_factory=lambda: Turn("", 0))

    def to_dict(self) -> dict:
        return self.turn.to_dict()

    @classmethod
    def from_dict(cls, data: dict) -> "TurnFinished":
        return cls(Turn.from_dict(data))


@dataclass(frozen=True)
class ProbeAnswered(Event):
    """An agent answered a coherence probe; ``turn`` is the answer's cost,
    ``correct`` None when the probe has no expectation (or no answer came)."""

    kind: ClassVar[str] = "probe"
    turn: Turn = field(default_factory=lambda: Turn("", 0, probe=True))
    question: str = ""
    expect: tuple = ()
    correct: bool | None = None

    @property
    def unanswered(self) -> bool:
        return self.turn.failed

    def to_dict(self) -> dict:
        return {**self.turn.to_dict(), "question": self.question, "expect": list(self.expect),
                "answer": self.turn.text, "correct": self.correct, "unanswered": self.unanswered}

    @classmethod
    def from_dict(cls, data: dict) -> "ProbeAnswered":
        turn = Turn.from_dict({**data, "event": "probe"})
        expect = data.get("expect") if isinstance(data.get("expect"), list) else []
        correct = data.get("correct")
        return cls(turn, _text(data.get("question")), tuple(str(e) for e in expect),
                   correct if isinstance(correct, bool) else None)

    def row(self) -> dict:
        """The answer for pages and JSON: the checkpoint's fields, the expectation and the phase."""
        return {**self.answer(), "expect": list(self.expect), "phase": self.turn.phase}

    def answer(self) -> dict:
        """The probe answer as the checkpoint keeps it."""
        return {"round": self.turn.round, "agent": self.turn.agent, "question": self.question,
                "answer": self.turn.text, "correct": self.correct, "unanswered": self.unanswered}


@dataclass(frozen=True)
class ToolModeChanged(Event):
    """An ``auto`` agent's tool calls travel another way from now on."""

    kind: ClassVar[str] = "tool_mode"
    round: int = 0
    agent: str = ""
    mode: str = ""
    reason: str = ""


@dataclass(frozen=True)
class RoundFinished(Event):
    """Every turn of ``round`` (and its probes) is done; ``turns`` are its
    turns, in the process that ran them."""

    kind: ClassVar[str] = "round_end"
    round: int = 0
    turns: tuple = _local(())


@dataclass(frozen=True)
class RoundProgress(Event):
    """What ``round`` got done, measured from its turns (``progress.py``):
    tool calls that ran and ``failed``, ``files`` created or changed by
    content (``unchanged``: writes of the bytes already there), ``memories``
    stored with new text (``repeats``: text already stored), ``recalls``
    and how many ``found`` something, probe answers ``scored`` and ``correct``."""

    kind: ClassVar[str] = "progress"
    round: int = 0
    calls: int = 0
    failed: int = 0
    files: tuple = ()
    unchanged: int = 0
    memories: tuple = ()
    repeats: int = 0
    recalls: int = 0
    found: int = 0
    scored: int = 0
    correct: int = 0

    @property
    def made(self) -> bool:
        """Something new: a file created or changed, or a memory with new text."""
        return bool(self.files or self.memories)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "files": list(self.files), "memories": list(self.memories)}

    @classmethod
    def from_dict(cls, data: dict) -> "RoundProgress":
        def names(key):
            value = data.get(key)
            return tuple(str(v) for v in value) if isinstance(value, list) else ()
        return cls(**{f.name: whole(data.get(f.name)) for f in fields(cls) if f.type == "int"},
                   files=names("files"), memories=names("memories"))


@dataclass(frozen=True)
class FinishChecked(Event):
    """The finish line's check command ran (after ``round``, or for an
    agent's ``done`` call): ``ok`` when it succeeded; ``status`` its exit
    ("exit code 1", "timed out"), ``output`` the end of what it printed."""

    kind: ClassVar[str] = "finish_check"
    round: int = 0
    command: str = ""
    ok: bool = False
    status: str = ""
    output: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> "FinishChecked":
        return cls(whole(data.get("round")), _text(data.get("command")), data.get("ok") is True,
                   _text(data.get("status")), _text(data.get("output")))


@dataclass(frozen=True)
class RoundFailed(Event):
    """Every turn of ``round`` failed; the round runs again (``attempt`` of it)."""

    kind: ClassVar[str] = "round_failed"
    round: int = 0
    attempt: int = 1
    error: str = ""


@dataclass(frozen=True)
class CheckpointWritten(Event):
    kind: ClassVar[str] = "checkpoint"
    round: int = 0
    path: str = ""


@dataclass(frozen=True)
class RunWarning(Event):
    """Something a person should know: ``what`` names the kind (``silent``,
    ``no_tools``, ``loop``, ``no_progress``, ``sources``...)."""

    kind: ClassVar[str] = "warning"
    message: str = ""
    round: int = 0
    agent: str = ""
    what: str = ""


@dataclass(frozen=True)
class Notice(Event):
    """A line for the person watching (console and log), not for the journal."""

    kind: ClassVar[str] = ""
    message: str = ""
    level: str = "info"  # or "warning"


@dataclass(frozen=True)
class RunFinished(Event):
    """The run (or this session of it) ended, after ``round``, for ``ending``."""

    kind: ClassVar[str] = "run_end"
    round: int = 0
    ending: Ending = field(default_factory=lambda: Ending("max_rounds"))
    stats: RunStats = field(default_factory=RunStats)
    summary: str = ""  # the end-of-run summary a person reads: totals, what was produced, what to look at
    checkpoint: str = _local("")

    def to_dict(self) -> dict:
        return {"round": self.round, "reason": self.ending.reason, "detail": self.ending.detail,
                "figures": dict(self.ending.figures), "stats": self.stats.to_dict(), "summary": self.summary}

    @classmethod
    def from_dict(cls, data: dict) -> "RunFinished":
        try:
            stats = RunStats.from_dict(data["stats"]) if isinstance(data.get("stats"), dict) else RunStats()
        except (TypeError, ValueError):
            stats = RunStats()
        return cls(whole(data.get("round")), Ending.read(data.get("reason"), data.get("detail"),
                                                         data.get("figures")), stats, _text(data.get("summary")))


@dataclass(frozen=True)
class StopAsked(Event):
    """Journals before version 4: the STOP file or signal that ended a run."""

    kind: ClassVar[str] = "stop"
    round: int = 0
    reason: str = ""


KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in (
    RunStarted, TurnStarted, TurnFinished, ProbeAnswered, ToolModeChanged, RoundFinished, RoundFailed,
    CheckpointWritten, RunWarning, RunFinished, StopAsked, RoundProgress, FinishChecked)}


def parse(record: dict) -> Event | None:
    """A journal line (already JSON) as its event; None for a kind this
    version does not know."""
    cls = KINDS.get(record.get("event")) if isinstance(record, dict) else None
    if cls is None:
        return None
    try:
        return cls.from_dict(record)
    except (TypeError, ValueError, AttributeError, RecursionError):
        return None


def _text(value) -> str:
    return value if isinstance(value, str) else ""


# -- delivering events ----------------------------------------------------------

class Observers:
    """The run's subscribers. ``trusted`` ones are azclaw's own (the
    journal): what they raise ends the run. A program's observer that
    raises is logged with its traceback and not called again; the run goes on."""

    def __init__(self, trusted: list[Observer] | None = None, users: list[Observer] | None = None):
        self._trusted = list(trusted or [])
        self._users = list(users or [])
        self._lock = threading.RLock()  # parallel turns emit from their threads, one event at a time

    def add(self, observer: Observer, trusted: bool = False) -> None:
        (self._trusted if trusted else self._users).append(observer)

    def emit(self, event: Event) -> list[Action]:
        actions: list[Action] = []
        with self._lock:
            for observer in self._trusted:
                actions += _actions(observer(event))
            for observer in list(self._users):
                try:
                    actions += _actions(observer(event))
                except Exception as exc:  # a program's bug must not end a night's run
                    self._users.remove(observer)
                    log.warning("observer %r raised %s: %s; it is not called again",
                                getattr(observer, "__name__", observer), type(exc).__name__, exc, exc_info=True)
        return actions


def _actions(value) -> list:
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [a for a in items if isinstance(a, (Stop, Nudge, Skip, Event))]


__all__ = ["Action", "CheckpointWritten", "Ending", "Event", "FinishChecked", "Nudge", "Observer", "Notice",
           "Observers", "ProbeAnswered", "REASONS", "ReplyProgress", "RoundFailed", "RoundProgress", "RoundFinished",
           "RunFinished", "RunStarted", "Skip", "Stop", "StopAsked", "ToolModeChanged", "TurnFinished", "TurnStarted",
           "RunWarning", "number", "parse", "whole"]
