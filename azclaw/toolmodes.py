"""How an agent's tool calls travel: the request options of a step, reading
the reply into calls or a final message, and the messages a step leaves.

* ``native``: the OpenAI ``tools`` field; the server returns ``tool_calls``.
* ``text``: the tools are described in the prompt and called as
  ``<tool_call>{...}</tool_call>`` blocks in the reply.
* ``constrained``: the server must answer with JSON matching a schema built
  from the offered tools (``constrained.py``): the way small local models
  call tools at all.
* ``auto`` (the default): a ladder, ``native`` -> ``text`` -> ``constrained``,
  that an agent only goes down, for the rest of the run (``Move``):

  - calls that do not parse, calls written as text that all failed, or a
    reply cut off at ``max_tokens`` without a call: to ``constrained`` from
    the next step on (the schema fixes the syntax and bounds the length);
  - ``AUTO_PROSE_TURNS`` turns in a row without any tool call while tools
    were offered, before any call came through in the mode: one rung down
    from the next turn on (``native`` to ``text``: a server that ignores the
    ``tools`` field still shows the model the tools; ``text`` to
    ``constrained``). Once calls come through, answering without one is
    the model's choice.

  A constrained reply that is not JSON at all (a server that ignores
  ``response_format``) is taken as the agent's message.

Malformed calls are never replayed as ``tool_calls`` (some servers then
reject every later request): the model gets an error result instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import constrained
from .client.completion import Completion, ToolCall
from .errors import ConfigError
from .tools.registry import Tool, ToolResult

MODES = ("auto", "native", "text", "constrained")
LADDER = ("native", "text", "constrained")  # the way auto goes, one way only
AUTO_PROSE_TURNS = 2  # turns in a row without a tool call, tools offered, before auto moves one rung down
TEXT_INSTRUCTIONS = ("To call a tool, write a block like this in your reply, one per call:\n"
                     '<tool_call>{"name": "recall", "arguments": {"query": "database"}}</tool_call>\n'
                     "You get the results and can answer again. Your reply without a tool call is your "
                     "message to the team.")


def check_mode(mode: str, where: str = "tool_mode") -> str:
    if mode not in MODES:
        raise ConfigError(f"{where}: {mode!r} is not one of {', '.join(MODES)}")
    return mode


def starting_mode(mode: str) -> str:
    """The mode an agent's first request uses."""
    return "native" if mode == "auto" else mode


@dataclass
class Step:
    """One request of a turn: what it offers and how its reply reads."""

    mode: str
    tools: list[Tool]
    format: constrained.StepFormat | None = None

    @classmethod
    def of(cls, mode: str, tools: list[Tool], max_tokens: int, must_call: bool = False) -> "Step":
        fmt = constrained.step_format(tools, max_tokens, allow_reply=not (must_call and tools)) \
            if mode == "constrained" else None
        return cls(mode, list(tools), fmt)

    def options(self) -> dict:
        """Keyword arguments of ``LLMClient.chat`` beyond the messages."""
        if self.mode == "constrained":
            return {"response_format": self.format.response_format()}
        if self.mode == "native" and self.tools:
            return {"tools": [t.schema() for t in self.tools]}
        return {}


@dataclass
class Reading:
    """A reply read: tool calls to run, or the final message; ``error`` when
    a constrained reply was not the JSON it had to be."""

    calls: list[ToolCall] = field(default_factory=list)
    text: str = ""
    error: str = ""

    @property
    def final(self) -> bool:
        return not self.calls and not self.error


def read_reply(step: Step, completion: Completion) -> Reading:
    if step.mode == "constrained":
        reply = constrained.parse_reply(completion.text, step.format, completion.finish_reason)
        if reply.error and not completion.text.lstrip().startswith(("{", "`")):
            # not JSON at all: a server that ignores response_format answered in prose (or with
            # nothing); that is the message, not a broken call (a grammar-bound reply starts with "{")
            return Reading(text=completion.text)
        return Reading(reply.calls, reply.message or "", reply.error)
    if not step.tools:  # the last step: whatever came is the message
        return Reading(text=completion.text)
    return Reading(list(completion.tool_calls), completion.text)


def instructions(mode: str, tools: list[Tool], max_tokens: int) -> str:
    """What the system prompt says about calling tools in ``mode``."""
    if mode == "text" and tools:
        return TEXT_INSTRUCTIONS
    if mode == "constrained":
        return constrained.instructions(constrained.step_format(tools, max_tokens))
    return ""


def append_step(messages: list[dict], step: Step, completion: Completion, reading: Reading,
                results: list[ToolResult]) -> None:
    """Add a tool step (or a constrained reply that did not parse) to the
    turn's messages."""
    if step.mode == "constrained" or completion.text_calls:
        # as plain text: templates that do not know tool calls often reject the ``tool`` role
        messages.append(constrained.assistant_message(completion.text or "(calling tools)"))
        body = "\n\n".join(f"Result of {r.name}:\n{r.content}" for r in results)
        if reading.error:
            body = f"Result of your reply:\nERROR: {reading.error}"
        messages.append({"role": "user", "content": body})
        return
    good = [c for c in reading.calls if c.arguments is not None]
    entry: dict = {"role": "assistant", "content": completion.text or ""}
    if good:
        entry["tool_calls"] = [{"id": c.id, "type": "function", "function": {
            "name": c.name, "arguments": c.raw_arguments or json.dumps(c.arguments)}} for c in good]
    messages.append(entry)
    ids = {c.id for c in good}
    messages.extend({"role": "tool", "tool_call_id": r.call_id, "name": r.name, "content": r.content}
                    for r in results if r.call_id in ids)
    broken = [r for r in results if r.call_id not in ids]
    if broken:
        messages.append({"role": "user", "content": "\n\n".join(f"Result of {r.name}:\n{r.content}" for r in broken)})


@dataclass(frozen=True)
class Move:
    """An ``auto`` agent's tool calls go another way from now on: ``mode``, and why."""

    mode: str
    reason: str


def step_move(step: Step, completion: Completion, reading: Reading, results: list[ToolResult]) -> Move | None:
    """Where an ``auto`` agent goes after this step (from the next step on), or None."""
    if step.mode == "constrained" or not step.tools:
        return None
    bad = [c for c in reading.calls if c.error]  # a call to a tool not offered parsed: a mistake, not a format
    if bad:
        return Move("constrained", f"a tool call that does not parse ({bad[0].name or 'no name'}: {bad[0].error})")
    if completion.text_calls and results and all(not r.ok for r in results):
        return Move("constrained", "tool calls written as text that failed")
    if not reading.calls and completion.cut_off == "length":
        return Move("constrained", "a reply cut off at max_tokens without a tool call")
    return None


def prose_move(mode: str, turns: int) -> Move | None:
    """Where an ``auto`` agent goes after ``turns`` turns in a row without a
    tool call (tools offered), or None."""
    if turns < AUTO_PROSE_TURNS or mode not in LADDER[:-1]:
        return None
    return Move(LADDER[LADDER.index(mode) + 1], f"{turns} turns in a row without a tool call, tools offered")


def retold(system: str, old: str, new: str, tools: list[Tool], max_tokens: int) -> str:
    """The system prompt of a turn that moves from ``old`` to ``new`` mode:
    ``old``'s instructions out, ``new``'s at the end."""
    before = instructions(old, tools, max_tokens)
    if before:
        system = system.replace("\n" + before, "", 1)
    after = instructions(new, tools, max_tokens)
    return system + ("\n\n" + after if after else "")
