"""Watchers: observers of a run's turns that notice what a person would
want to know in the morning, and act on it (a warning, a nudge, a stop).
Each is a small class whose instances are called with every event.

* ``SilentAgents``: an agent whose turns keep ending with an empty reply is
  named in a warning; the team goes on (the run stops for it only when
  ``stop_on_silent_agent`` says so).
* ``NoTools``: an agent that called no tool for ``no_tool_turns`` turns in
  a row while tools were offered is named in a warning.
* ``Loops``: an agent going in circles (the same tool call with the same
  result, a message nearly the same as one of its last few, memory titles
  that are timestamps or repeats) for ``loop_turns`` turns in a row is
  warned and nudged; ``loop_limit`` turns later it sits out or the run stops.
* ``NoProgress``: ``no_progress_rounds`` rounds in a row without a file
  created or changed or a new memory: a warning; the run stops after
  ``stop_on_no_progress`` such rounds when the user asked.

``Progress`` (progress.py) measures every round, ``Budgets`` (budgets.py)
keeps the budgets; ``default_watchers`` wires them all.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import deque

from .budgets import Budgets
from .events import Event, Nudge, RoundProgress, RunWarning, Skip, Stop, TurnFinished, TurnStarted
from .options import RunOptions
from .progress import Progress

SILENT_WARN = 3  # empty turns in a row before an agent is reported silent
AGAIN_EVERY = 10  # turns or rounds between repeated warnings of one streak
LOOP_WINDOW = 3  # an agent's last turns a turn is compared with
SIMILAR = 0.9  # difflib ratio above which two messages are "nearly the same"
COMPARED_CHARS = 2000  # of each message
SKIP_ROUNDS = 3  # rounds an agent going in circles sits out (on_loop="skip")
_TIMESTAMP = re.compile(r"[\d\W_T]*")  # 152630, 2024-05-01_15-26-30, 15.26.47


class SilentAgents:
    """Counts each agent's empty turns in a row."""

    def __init__(self, stop_after: int = 0, warn_after: int = SILENT_WARN):
        self.stop_after, self.warn_after = stop_after, warn_after
        self.streak: dict[str, int] = {}

    def __call__(self, event: Event):
        if not isinstance(event, TurnFinished) or event.turn.probe:
            return None
        turn = event.turn
        self.streak[turn.agent] = self.streak.get(turn.agent, 0) + 1 if turn.empty else 0
        n = self.streak[turn.agent]
        if self.stop_after and n >= self.stop_after:
            return Stop("no_progress", f"{turn.agent} gave only empty replies for {n} rounds in a row",
                        {"agent": turn.agent, "empty_rounds": n})
        if n == self.warn_after or (n > self.warn_after and n % 10 == 0):
            return RunWarning(f"{turn.agent} gave only empty replies for {n} rounds in a row; "
                                    "the team goes on without its words", turn.round, turn.agent, "silent")
        return None


def _again(n: int, first: int) -> bool:
    """Warn at ``first`` and every ``AGAIN_EVERY`` after it."""
    return n == first or (n > first and (n - first) % AGAIN_EVERY == 0)


class NoTools:
    """Counts each agent's turns in a row without a tool call while tools were offered."""

    def __init__(self, warn_after: int = 3):
        self.warn_after = warn_after
        self.offered: dict[str, tuple] = {}
        self.streak: dict[str, int] = {}

    def __call__(self, event: Event):
        if isinstance(event, TurnStarted):
            self.offered[event.agent] = event.tools
            return None
        if not self.warn_after or not isinstance(event, TurnFinished) or event.turn.probe:
            return None
        turn = event.turn
        if turn.failed or turn.empty:  # no reply at all: the server's or SilentAgents' to tell
            return None
        offered = self.offered.get(turn.agent, ())
        if turn.calls or not offered:  # a call that did not parse is still a try
            self.streak[turn.agent] = 0
            return None
        n = self.streak[turn.agent] = self.streak.get(turn.agent, 0) + 1
        if _again(n, self.warn_after):
            return RunWarning(f"{turn.agent} called no tool in {n} turns in a row although tools were offered "
                              f"({', '.join(offered)}): its model may not call tools here (azclaw doctor tells; "
                              "try --tool-mode constrained or a model that calls tools)", turn.round, turn.agent,
                              "no_tools")
        return None


class _Past:
    """What an agent did in its last turns."""

    def __init__(self):
        self.calls: deque[set] = deque(maxlen=LOOP_WINDOW)
        self.messages: deque[str] = deque(maxlen=LOOP_WINDOW)
        self.streak = 0


class Loops:
    """Notices an agent going in circles; warns and nudges it at
    ``turns`` turns in a row, and ``limit`` turns later skips it for
    ``SKIP_ROUNDS`` rounds or stops the run (``action``)."""

    def __init__(self, turns: int = 3, limit: int = 0, action: str = "skip"):
        self.turns, self.limit, self.action = turns, limit, action
        self.past: dict[str, _Past] = {}

    def __call__(self, event: Event):
        if not self.turns or not isinstance(event, TurnFinished) or event.turn.probe or event.turn.failed:
            return None
        turn = event.turn
        past = self.past.setdefault(turn.agent, _Past())
        why = circling(turn, past)
        past.calls.append({_key(u) for u in turn.calls if u.counted})
        if turn.text.strip():
            past.messages.append(turn.text.strip()[:COMPARED_CHARS])
        if not why:
            past.streak = 0
            return None
        past.streak += 1
        n, agent = past.streak, turn.agent
        if n < self.turns:
            return None
        nudge = Nudge(agent, f"you repeated {why} for {n} turns; recall what is done and move on to the next "
                             "open task")
        if self.limit and n >= self.turns + self.limit:
            past.streak = 0
            figures = {"agent": agent, "turns": n, "what": why}
            if self.action == "stop":
                return Stop("loop", f"{agent} went in circles for {n} turns in a row: {why}", figures)
            return [RunWarning(f"{agent} went in circles for {n} turns in a row ({why}): it sits out "
                               f"{SKIP_ROUNDS} rounds", turn.round, agent, "loop"),
                    Skip(agent, SKIP_ROUNDS, f"it repeated {why}"), nudge]
        if _again(n, self.turns):
            return [RunWarning(f"{agent} is going in circles: {why} for {n} turns in a row; it is nudged to "
                               "move on", turn.round, agent, "loop"), nudge]
        return nudge


def circling(turn, past: _Past) -> str:
    """How ``turn`` repeats the agent's last turns, in words ("" when it does not)."""
    reasons = []
    keys = [(_key(u), u) for u in turn.calls if u.counted]
    if any(_made(u.effect) for _, u in keys):  # a file written, a memory with a name: not a circle
        return ""
    seen = set().union(*past.calls) if past.calls else set()
    if keys and all(k in seen for k, _ in keys):
        use = keys[0][1]
        reasons.append(f"{use.tool} {_short(use.arguments)}" + (f" and {len(keys) - 1} more calls"
                                                                  if len(keys) > 1 else ""))
    text = turn.text.strip()[:COMPARED_CHARS]
    if text and any(_similar(text, m) for m in past.messages):
        reasons.append("the same message")
    titles = [u.effect for u in turn.calls if u.counted and u.effect and u.effect.kind == "memory"]
    if titles and all(e.status == "repeat" or is_timestamp(e.target) for e in titles):
        names = ", ".join(dict.fromkeys(e.target for e in titles))
        reasons.append(f"memories titled {names[:80]}" if any(is_timestamp(e.target) for e in titles)
                       else f"memories already stored ({names[:80]})")
    return " and ".join(reasons)


def _made(effect) -> bool:
    """A file created or changed, or a memory of new text under a title that is a name."""
    if effect is None:
        return False
    if effect.kind == "file":
        return effect.status in ("created", "changed", "")
    return effect.kind == "memory" and effect.status in ("new", "") and not is_timestamp(effect.target)


def is_timestamp(title: str) -> bool:
    """A memory title that is a time, not a name: 152630, 2024-05-01T15:26:30."""
    return bool(_TIMESTAMP.fullmatch(title)) and sum(c.isdigit() for c in title) >= 6


def _similar(a: str, b: str) -> bool:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return matcher.real_quick_ratio() >= SIMILAR and matcher.quick_ratio() >= SIMILAR and matcher.ratio() >= SIMILAR


def _key(use) -> tuple:
    """A call as a loop sees it: the tool, its arguments, what it gave back."""
    try:
        arguments = json.dumps(json.loads(use.arguments), sort_keys=True)
    except (ValueError, TypeError, RecursionError):
        arguments = use.arguments
    return (use.tool, arguments, use.ok, hash(use.result))


def _short(arguments: str, most: int = 80) -> str:
    text = " ".join(arguments.split())
    return text if len(text) <= most else text[:most] + "..."


class NoProgress:
    """Counts the rounds in a row that made nothing new (``RoundProgress.made``)."""

    def __init__(self, warn_after: int = 5, stop_after: int = 0):
        self.warn_after, self.stop_after = warn_after, stop_after
        self.streak = 0
        self.since = 0

    def __call__(self, event: Event):
        if not isinstance(event, RoundProgress):
            return None
        if event.made:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak == 1:
            self.since = event.round
        n, actions = self.streak, []
        rounds = f"round {event.round}" if n == 1 else f"rounds {self.since}-{event.round}"
        if self.warn_after and _again(n, self.warn_after):
            actions.append(RunWarning(f"no progress in {n} rounds in a row ({rounds}): no file created or changed, "
                                      "no new memory", event.round, "", "no_progress"))
        if self.stop_after and n >= self.stop_after:
            actions.append(Stop("no_progress", f"no file created or changed and no new memory in {n} rounds in a "
                                f"row ({rounds})", {"rounds": n, "since": self.since}))
        return actions or None


def default_watchers(options: RunOptions, agents=()) -> list:
    """The watchers every run has, set by its options (and the ``agents``'
    own token budgets)."""
    return [Progress(), SilentAgents(options.stop_on_silent_agent), NoTools(options.no_tool_turns),
            Loops(options.loop_turns, options.loop_limit, options.on_loop),
            NoProgress(options.no_progress_rounds, options.stop_on_no_progress), Budgets(options, agents)]
