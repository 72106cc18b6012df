"""Watchers: observers of a run's turns that notice what a person would
want to know in the morning, and act on it (a warning, a nudge, a stop).
Each is a small class whose instances are called with every event.

* ``SilentAgents``: an agent whose turns keep ending with an empty reply is
  named in a warning; the team goes on (the run stops for it only when
  ``stop_on_silent_agent`` says so).
"""

from __future__ import annotations

from .events import Event, RunWarning, Stop, TurnFinished
from .options import RunOptions

SILENT_WARN = 3  # empty turns in a row before an agent is reported silent


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


def default_watchers(options: RunOptions) -> list:
    """The watchers every run has, set by its options."""
    return [SilentAgents(options.stop_on_silent_agent)]
