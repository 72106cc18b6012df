"""How much of the team's conversation each request carries: the context mode.

* ``memory`` (the default): the previous round's messages only. Everything
  older lives in memory, found with recall(); the request stays flat.
* ``full``: the whole conversation so far, from round 1's opening prompt on,
  as other frameworks send it. It is cut only when it outgrows the context
  budget: oldest messages first, with a note saying how many were left out.
* ``window:N``: the last N rounds (round 1's opening prompt counts as the
  round before round 1), cut at the budget like ``full``.

Round 1 is the same in every mode (the opening prompt), and the modes differ
in nothing else: system prompt, tools, memory and probe questions are the
same, so a bench of two modes measures this one difference. In ``full`` and
``window`` modes a probe question comes after the conversation, as a next
turn would; in ``memory`` mode it comes alone, as it always has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError

MESSAGE_CHARS = 4000  # characters of one agent's message sent on (RunOptions.message_chars)

MODES = ("memory", "full", "window:N")
_WINDOW = re.compile(r"window:([0-9]+)")
NOTE_CHARS = 120  # room kept for the note that says how many messages were left out


@dataclass
class Message:
    """One agent's final message of one round (round 0: the opening prompt)."""

    round: int
    agent: str
    text: str

    def to_dict(self) -> dict:
        return {"round": self.round, "agent": self.agent, "text": self.text}


@dataclass(frozen=True)
class Conversation:
    """The user message of a turn and how many messages of the conversation
    were left out of it to fit the context budget."""

    text: str
    dropped: int = 0


@dataclass(frozen=True)
class ContextMode:
    """``memory``, ``full`` or ``window`` (with ``rounds``)."""

    kind: str = "memory"
    rounds: int | None = None

    @classmethod
    def parse(cls, value: "str | ContextMode | None") -> "ContextMode":
        """``"memory"``, ``"full"`` or ``"window:N"`` (N >= 1)."""
        if isinstance(value, ContextMode):
            return value
        text = str(value).strip().lower() if value is not None else "memory"
        if text in ("memory", "full"):
            return cls(text)
        found = _WINDOW.fullmatch(text)
        if found and int(found.group(1)) >= 1:
            return cls("window", int(found.group(1)))
        raise ConfigError(f"context: {value!r} is not one of memory, full, window:N (N a whole number >= 1)")

    def __str__(self) -> str:
        return f"window:{self.rounds}" if self.kind == "window" else self.kind

    def shown(self) -> str:
        """What a request carries, as the system prompt tells the agents."""
        if self.kind == "full":
            return ("You are shown the team's whole conversation so far; when it grows too long for one request, "
                    "the oldest messages are left out.")
        if self.kind == "window":
            rounds = "round" if self.rounds == 1 else f"{self.rounds} rounds"
            return f"You are shown what every agent said in the last {rounds}. Nothing older is shown again."
        return "You are shown only what every agent said in the previous round. Nothing older is shown again."

    @property
    def slug(self) -> str:
        """A folder name for the mode: ``window-3``."""
        return str(self).replace(":", "-")

    def history_keep(self, team_size: int, default: int) -> int | None:
        """How many of the latest messages the run must keep (None: all)."""
        if self.kind == "full":
            return None
        if self.kind == "window":
            return max(default, (self.rounds or 1) * max(1, team_size))
        return default

    def conversation(self, round_no: int, history: list[Message], opening: str, room: int,
                     message_chars: int = MESSAGE_CHARS, where: str = "the run journal",
                     closing: str | None = None, focus: str = "") -> Conversation:
        """The user message of a turn in ``round_no``. ``room`` is the
        characters the message may take (the context budget less the system
        prompt); only ``full`` and ``window`` fill it. ``closing`` replaces
        "Round N: your turn." (a probe's question); ``focus`` follows the
        opening prompt in round 1 (the same in every mode; later rounds
        show the opening without it)."""
        opening = Message(0, "", opening.strip() or "Begin.")
        if round_no == 1 and closing is None:
            return Conversation(opening.text + (f"\n\n{focus.strip()}" if focus.strip() else ""))
        if self.kind == "memory":
            if closing is not None:
                return Conversation(closing)
            entries = previous(history, round_no)
            if not entries:
                return Conversation(f"Round {round_no}: no messages came from the previous round. Continue the task.")
            return fit(entries, f"Round {round_no}: your turn.", None, message_chars, where)
        entries = [opening] + [m for m in history if m.round < round_no]
        if self.kind == "window":
            rounds = sorted({m.round for m in entries})[-(self.rounds or 1):]
            entries = [m for m in entries if m.round >= rounds[0]]
        closing = closing if closing is not None else f"Round {round_no}: your turn."
        return fit(entries, closing, room, message_chars, where)


def previous(history: list[Message], round_no: int) -> list[Message]:
    """The messages of the latest round before ``round_no`` that produced
    any: after a round in which every turn failed the team goes on from the
    last words it had."""
    latest = max((m.round for m in history if m.round < round_no), default=None)
    return [m for m in history if m.round == latest]


def fit(entries: list[Message], closing: str, room: int | None, message_chars: int, where: str) -> Conversation:
    """The conversation ``entries`` (round 0 is the opening prompt) as one
    message of at most ``room`` characters (None: no limit): the oldest
    entries are left out first, never the newest one. The one renderer of
    every context mode."""
    blocks = [_block(m, message_chars, where) for m in entries]
    if room is None:
        return Conversation(_render(entries, blocks, closing, 0))
    # from the newest entry back: how many of the newest fit (with their round headings)
    used, keep, seen = len(closing) + NOTE_CHARS, 0, set()
    for m, block in zip(reversed(entries), reversed(blocks)):
        used += len(block) + 2 + (0 if m.round in seen else len(_heading(m.round)) + 2)
        seen.add(m.round)
        if used > room and keep >= 1:
            break
        keep += 1
    dropped = len(entries) - keep
    return Conversation(_render(entries[dropped:], blocks[dropped:], closing, dropped), dropped)


def _block(m: Message, chars: int, where: str) -> str:
    if m.round == 0:
        return m.text
    return f"[{m.agent}]\n{trim(m.text, chars, where)}"


def trim(text: str, chars: int, where: str) -> str:
    if len(text) <= chars:
        return text
    return text[:chars] + f"\n[... {len(text) - chars} more characters; the full text is in {where}]"


def _heading(round_no: int) -> str:
    return "Round 1 opened with:" if round_no == 0 else f"Messages of round {round_no}:"


def _render(entries: list[Message], blocks: list[str], closing: str, dropped: int) -> str:
    parts = []
    if dropped:
        parts.append(f"[{dropped} earlier message{'s' if dropped != 1 else ''} of this conversation "
                     "left out to keep the request within the context budget]")
    current = None
    for m, block in zip(entries, blocks):
        if m.round != current:
            current = m.round
            parts.append(_heading(m.round))
        parts.append(block)
    parts.append(closing)
    return "\n\n".join(parts)
