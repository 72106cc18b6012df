"""What a run has done so far, and the one fold that builds it from events.

``RunState.apply(event)`` is the only place that adds turns up: the round
loop subscribes it to its events, ``--resume`` feeds it the journal's
events after the checkpoint, and ``status``/``report`` feed it a whole
journal. The rules, in one place:

* a round counts when its ``RoundFinished`` comes; until then its turns
  and probe answers are ``pending`` (a resumed run takes up the finished
  ones and runs only the rest);
* a second turn of an agent in a round replaces the first, whose cost
  still counts (an attempt of a round that failed and ran again);
* ``RoundFailed`` moves the round's pending turns to those attempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .context import Message, previous
from .events import Event, ProbeAnswered, RoundFailed, RoundFinished, RunStarted, TurnFinished
from .stats import Coherence, RunStats
from .turn import Turn

HISTORY_KEEP = 100


@dataclass
class RunState:
    """The part of a checkpoint that changes every round."""

    round: int = 0  # the last completed round
    stats: RunStats = field(default_factory=RunStats)
    history: list[Message] = field(default_factory=list)  # the last ``keep`` messages
    probe_answers: list[dict] = field(default_factory=list)
    keep: int | None = HISTORY_KEEP  # messages the context mode needs (None: all); not saved
    pending: dict[str, Turn] = field(default_factory=dict)  # finished turns of the round under way
    pending_probes: list[ProbeAnswered] = field(default_factory=list)
    team: list[str] = field(default_factory=list)  # speaking order (from RunStarted); not saved

    @property
    def written_files(self) -> list[str]:
        return self.stats.files

    # -- the fold ----------------------------------------------------------------
    def apply(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.team = list(event.agents)
        elif isinstance(event, TurnFinished):
            turn = event.turn
            if turn.round <= self.round:
                return  # a round already counted (a journal read after its checkpoint)
            earlier = self.pending.get(turn.agent)
            if earlier is not None and earlier.round == turn.round:
                self.stats.add(earlier.retry())
            self.pending[turn.agent] = turn
        elif isinstance(event, ProbeAnswered) and event.turn.round > self.round:
            self.pending_probes = [p for p in self.pending_probes
                                   if (p.turn.agent, p.question) != (event.turn.agent, event.question)] + [event]
        elif isinstance(event, RoundFailed):
            for turn in self.pending.values():
                self.stats.add(turn.retry())
            self.pending.clear()
        elif isinstance(event, RoundFinished) and event.round > self.round:
            self._fold(event.round)

    def _ordered(self, round_no: int) -> list[Turn]:
        """The pending turns of ``round_no`` in speaking order (parallel turns finish in any order)."""
        order = {name: n for n, name in enumerate(self.team)}
        return sorted((t for t in self.pending.values() if t.round == round_no),
                      key=lambda t: order.get(t.agent, len(order)))

    def messages(self, round_no: int | None = None) -> list[Message]:
        """The history, and the messages of ``round_no`` so far (its probes come before it is counted)."""
        extra = [Message(t.round, t.agent, t.text) for t in self._ordered(round_no) if t.text] if round_no else []
        return self.history + extra

    def _fold(self, round_no: int) -> None:
        turns = self._ordered(round_no)
        for turn in turns:
            self.stats.add(turn)
            if turn.text:
                self.history.append(Message(round_no, turn.agent, turn.text))
        if self.keep is not None:
            del self.history[:max(0, len(self.history) - self.keep)]
        for probe in self.pending_probes:
            if probe.turn.round == round_no:
                self.stats.add(probe.turn)
                self.probe_answers.append(probe.answer())
        self.pending = {a: t for a, t in self.pending.items() if t.round > round_no}
        self.pending_probes = [p for p in self.pending_probes if p.turn.round > round_no]
        self.round = self.stats.rounds = round_no

    def take_up(self, round_no: int) -> dict[str, Turn]:
        """The finished turns of ``round_no`` a resumed run keeps (a turn
        that failed runs again: its cost counts as an attempt)."""
        kept = {}
        for agent, turn in list(self.pending.items()):
            if turn.round != round_no or turn.failed:
                self.stats.add(turn.retry())
                del self.pending[agent]
            else:
                kept[agent] = turn
        return kept

    # -- reading it ----------------------------------------------------------------
    def summary(self) -> str:
        """The end-of-run summary: totals, the per-agent table, the coherence score."""
        s = self.stats
        lines = [f"Rounds {s.rounds} | tokens {s.prompt_tokens:,} prompt + {s.completion_tokens:,} completion"
                 f" | memories {s.memories} | files {s.files_written} | tool calls {s.tool_calls}"
                 f" | errors {s.errors} | {s.elapsed / 60:.1f} min", s.table()]
        if self.probe_answers:
            lines.append(f"Coherence: {Coherence.of(self.probe_answers)}")
        return "\n".join(lines)

    def previous(self, round_no: int) -> list[Message]:
        """The messages of the latest round before ``round_no`` that produced
        any: after a round in which every turn failed (a server down, a
        resume after an abort) the team goes on from the last words it had."""
        return previous(self.history, round_no)
