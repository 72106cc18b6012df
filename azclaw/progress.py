"""Progress: what a round got done, measured from what its turns record.

After every round the ``Progress`` watcher turns the round's turns (and
the probe answers after it) into one ``RoundProgress`` event, which the
journal keeps (``progress`` lines) and the console, ``status``, ``show``
and the report show. It counts only what the tools told
(``ToolUse.effect``):

* files created or changed by content (a write of the bytes already there
  is ``unchanged``, not progress);
* memories stored with new text (the same text again is a ``repeat``);
* recall calls that found something;
* tool calls that ran, and those that gave the model an error;
* probe answers scored, and correct.

A round "made" something when a file was created or changed or a memory
got new text; the ``NoProgress`` watcher counts the rounds that did not.
"""

from __future__ import annotations

from .events import Event, ProbeAnswered, RoundFinished, RoundProgress
from .turn import Turn


def measure(round_no: int, turns, probes=()) -> RoundProgress:
    """The progress of round ``round_no``: its ``turns`` and the ``probes``
    (``ProbeAnswered``) asked after it."""
    calls = failed = unchanged = repeats = recalls = found = 0
    files: dict[str, None] = {}
    memories: dict[str, None] = {}
    for turn in turns:
        calls += turn.tool_calls
        failed += turn.tool_errors
        for use in turn.calls:
            effect = use.effect
            if effect is None or not use.counted:
                continue
            if effect.kind == "file":
                if effect.status == "unchanged":
                    unchanged += 1
                else:  # created, changed, or a journal older than the status
                    files[effect.target] = None
            elif effect.kind == "memory":
                if effect.status == "repeat":
                    repeats += 1
                else:
                    memories[effect.target] = None
            elif effect.kind == "recall":
                recalls += 1
                found += effect.status == "found"
    scored = [p for p in probes if p.correct is not None]
    return RoundProgress(round_no, calls, failed, tuple(files), unchanged, tuple(memories), repeats, recalls, found,
                         len(scored), sum(1 for p in scored if p.correct))


class Progress:
    """Emits the ``RoundProgress`` of every finished round."""

    def __init__(self):
        self.probes: list[ProbeAnswered] = []

    def __call__(self, event: Event):
        if isinstance(event, ProbeAnswered):
            self.probes.append(event)
        elif isinstance(event, RoundFinished):
            probes = [p for p in self.probes if p.turn.round == event.round]
            self.probes = [p for p in self.probes if p.turn.round > event.round]
            return measure(event.round, [t for t in event.turns if isinstance(t, Turn)], probes)
        return None


def idle_rounds(progress) -> list[int]:
    """The last rounds in a row (of ``progress``, RoundProgress in order) that made nothing new."""
    idle = []
    for p in reversed(progress):
        if p.made:
            break
        idle.insert(0, p.round)
    return idle


def describe(p: RoundProgress) -> str:
    """One line for people: "2 files created or changed (app.py, db.py), 1 new memory, 9 tool calls (1 failed)"."""
    parts = []
    if p.files:
        parts.append(f"{_n(len(p.files), 'file')} created or changed ({_names(p.files)})")
    else:
        parts.append("no file created or changed" + (f" ({_n(p.unchanged, 'write')} of the same bytes)"
                                                      if p.unchanged else ""))
    if p.memories:
        parts.append(f"{_n(len(p.memories), 'new memory', 'new memories')}"
                     + (f" ({p.repeats} repeated)" if p.repeats else ""))
    else:
        parts.append("no new memory" + (f" ({_n(p.repeats, 'repeat')})" if p.repeats else ""))
    parts.append(f"{_n(p.calls, 'tool call')}" + (f" ({p.failed} failed)" if p.failed else ""))
    if p.recalls:
        parts.append(f"recall found something {p.found} of {_n(p.recalls, 'time')}")
    if p.scored:
        parts.append(f"probes {p.correct}/{p.scored} correct")
    return ("progress: " if p.made else "no progress: ") + ", ".join(parts)


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


def _names(names, most: int = 3) -> str:
    shown = ", ".join(list(names)[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
