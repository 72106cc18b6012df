"""One agent's turn: model calls and tool steps until a final text.

1. The agent is sent its system prompt and one user message.
2. If the reply asks for tools, each call runs (a call that repeats one
   already made in this turn is skipped) and the results go back to the model.
3. That repeats for at most ``max_steps`` tool steps; after the last one, or
   a step of nothing but repeats, the model is told to answer without tools.
4. The reply without tool calls is the turn's message to the team.

``take_turn`` returns a ``Turn``: the one record of a turn, which the loop
folds into the run state, the journal writes (``to_dict``) and ``azclaw
status`` and ``azclaw report`` read back (``from_dict``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields

from .agent import Agent
from .errors import ContextOverflow, EndpointError
from .client.llm import Completion
from .prompt import CHARS_PER_TOKEN, fit_messages
from .toolmodes import Step, append_step, instructions, read_reply, switch_reason
from .tools.registry import Tool, ToolContext, ToolRegistry, ToolResult

log = logging.getLogger("azclaw")

DEFAULT_TOOL_STEPS = 8
ALL_REPEATED = ("Every tool call you just made repeats one you already made in this turn. "
                "Work with the results you have: give your final message to the team now, without tools.")
STEPS_USED = ("You have used all your tool steps for this turn. "
              "Give your final message to the team now, without tools.")
DUPLICATE = "[duplicate call skipped: its result is already above in this turn]"
MAX_CALLS_PER_STEP = 16  # tool calls run from one reply; the rest get TOO_MANY, so one reply cannot run for hours
TOO_MANY = (f"ERROR: not run: one reply may make at most {MAX_CALLS_PER_STEP} tool calls; "
            "this one came after them. Make it again in your next step if you still need it.")
AUDIT_CHARS = 2000  # of a call's arguments and of its result, in the journal
AUDIT_FULL = {"run_python": 65536}  # what model-written code ran, and what it printed, is always kept


@dataclass
class ToolUse:
    """One tool call of a turn, as the audit trail keeps it: arguments and
    result cut to ``AUDIT_CHARS`` (their full length beside them)."""

    tool: str
    arguments: str  # the arguments as the model sent them (JSON text)
    result: str  # what the model got back; "ERROR: ..." when ``ok`` is false
    ok: bool = True
    seconds: float = 0.0
    step: int = 0  # the turn's tool step it belongs to (0 is the first)
    arguments_chars: int = 0
    result_chars: int = 0
    duplicate: bool = False  # repeated an earlier call of the turn: not run again

    @classmethod
    def of(cls, tool: str, arguments: str, result: str, ok: bool, seconds: float, step: int,
           duplicate: bool = False) -> "ToolUse":
        limit = AUDIT_FULL.get(tool, AUDIT_CHARS)
        return cls(tool, _cut(arguments, limit), _cut(result, limit), ok, round(seconds, 3), step, len(arguments),
                   len(result), duplicate)

    @classmethod
    def from_dict(cls, data) -> "ToolUse | None":
        if not isinstance(data, dict):
            return None
        return cls(str(data.get("tool") or ""), str(data.get("arguments") or ""), str(data.get("result") or ""),
                   data.get("ok") is not False, _float(data.get("seconds")), _int(data.get("step")),
                   _int(data.get("arguments_chars")), _int(data.get("result_chars")), data.get("duplicate") is True)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters]"


@dataclass
class Turn:
    """What one agent's turn (or its answer to a coherence probe) did and cost.

    Token counts are summed over the turn's requests, as the server reported
    them; ``context_tokens`` is the largest prompt of the turn and
    ``context_chars`` the size of the largest request sent."""

    agent: str
    round: int
    phase: str | None = None
    text: str = ""
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # waiting for the model
    context_chars: int = 0
    context_tokens: int = 0
    tool_calls: dict[str, int] = field(default_factory=dict)
    tool_errors: int = 0
    memories: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    calls: list[ToolUse] = field(default_factory=list)  # the audit trail: every tool call, in order
    empty: bool = False  # the model answered, with nothing
    truncated: int = 0  # replies cut off (at max_tokens, or by the time or size limit)
    cached_tokens: int = 0  # prompt tokens the server served from its cache, where it says so
    mode: str = ""  # how the tool calls travelled: native, text or constrained (toolmodes.py)
    switched: str = ""  # why an auto agent went constrained in this turn
    problems: list[str] = field(default_factory=list)  # what was wrong with replies, one line each
    probe: bool = False  # an answer to a coherence probe, not a round's turn
    retried: bool = False  # an attempt of a round in which every turn failed: its round ran again
    dropped: int = 0  # messages of the conversation left out to fit the context budget (full, window modes)

    @property
    def failed(self) -> bool:
        return bool(self.errors) and not self.text

    def retry(self) -> "Turn":
        """Mark this turn as an attempt of a round that ran again; returns it."""
        self.retried = True
        return self

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        """The turn's journal fields (the event name says whether it is a probe)."""
        data = asdict(self)
        del data["probe"], data["retried"]
        data["seconds"] = round(self.seconds, 3)
        data["tokens_per_second"] = round(self.tokens_per_second, 2)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Turn":
        """A turn from a journal line of any version; what is missing or of
        the wrong type reads as empty, never raises."""
        turn = cls(agent=str(data.get("agent") or ""), round=_int(data.get("round")),
                   probe=data.get("event") == "probe")
        turn.phase = data["phase"] if isinstance(data.get("phase"), str) else None
        turn.text = str(data.get("text") if "text" in data else data.get("answer") or "")
        for f in fields(cls):
            value = data.get(f.name)
            if f.type == "int" and f.name != "round":
                setattr(turn, f.name, _int(value))
            elif f.type == "float":
                setattr(turn, f.name, _float(value))
            elif f.type == "str" and f.name in ("mode", "switched"):
                setattr(turn, f.name, value if isinstance(value, str) else "")
            elif f.type == "list[str]":
                setattr(turn, f.name, [str(v) for v in value] if isinstance(value, list) else [])
        calls = data.get("tool_calls")
        if isinstance(calls, dict):
            turn.tool_calls = {str(k): _int(v) for k, v in calls.items()}
        uses = data.get("calls")  # journals before version 3 have none
        turn.calls = [u for u in map(ToolUse.from_dict, uses if isinstance(uses, list) else []) if u]
        turn.empty = data.get("empty") is True
        return turn


def _int(value) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and abs(value) < 1e18 else 0


def _float(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and abs(value) < 1e18 else 0.0


def take_turn(agent: Agent, system: str, user: str, tools: list[Tool], registry: ToolRegistry,
              ctx: ToolContext, *, phase: str | None = None, max_steps: int = DEFAULT_TOOL_STEPS,
              context_budget: int, probe: bool = False, on_delta=None) -> Turn:
    """Run one turn of ``agent`` with ``tools`` offered; never raises for
    what the model or the server does (failures are in ``Turn.errors``).
    ``on_delta(progress)`` follows a streamed reply as it arrives."""
    turn = Turn(agent.name, ctx.round, phase, probe=probe, mode=agent.active_mode)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    offered = list(tools)
    seen: set[str] = set()
    used_ids: set[str] = set()
    for n_step in range(max_steps + 1):
        if n_step == max_steps and offered:
            messages.append({"role": "user", "content": STEPS_USED})
            offered = []
        # a constrained turn's first step must call a tool: small models otherwise rarely do
        step = Step.of(agent.active_mode, offered, agent.max_tokens, must_call=n_step == 0 and not probe)
        completion = _call(agent, messages, step, turn, context_budget, on_delta)
        if completion is None:
            break
        reading = read_reply(step, completion)
        if reading.final:
            turn.text = reading.text
            break
        results = []
        for n, call in enumerate(reading.calls):
            # servers that number calls per reply (call_0 every step) would pair a
            # result with the wrong call; strict APIs refuse a repeated id outright
            if call.id in used_ids:
                call.id = f"{call.id}_s{n_step}_{n}"
            used_ids.add(call.id)
            if n >= MAX_CALLS_PER_STEP:  # every call still gets a result: APIs want one per call id
                results.append(ToolResult(call.id, call.name, TOO_MANY, ok=False))
                continue
            arguments = call.raw_arguments if call.arguments is None else json.dumps(call.arguments, sort_keys=True)
            key = f"{call.name}\x00{arguments}"
            if key in seen:
                results.append(ToolResult(call.id, call.name, DUPLICATE, duplicate=True))
                turn.calls.append(ToolUse.of(call.name, arguments, DUPLICATE, True, 0.0, n_step, duplicate=True))
                continue
            seen.add(key)
            started = time.monotonic()
            outcome = registry.execute(call, ctx, offered)
            turn.calls.append(ToolUse.of(call.name, call.raw_arguments or arguments, outcome.content, outcome.ok,
                                         time.monotonic() - started, n_step))
            turn.tool_calls[call.name] = turn.tool_calls.get(call.name, 0) + 1
            turn.tool_errors += not outcome.ok
            results.append(outcome)
        turn.tool_errors += bool(reading.error)
        if len(reading.calls) > MAX_CALLS_PER_STEP:
            turn.tool_errors += 1
            turn.problems.append(f"a reply made {len(reading.calls)} tool calls: the first {MAX_CALLS_PER_STEP} were "
                                 f"taken, the other {len(reading.calls) - MAX_CALLS_PER_STEP} refused")
        append_step(messages, step, completion, reading, results)
        if results and all(r.duplicate for r in results):
            messages.append({"role": "user", "content": ALL_REPEATED})
            offered = []
        why = switch_reason(step, completion, reading, results) if agent.tool_mode == "auto" else ""
        if why:  # from the next step on, and for the rest of the run
            agent.active_mode = turn.mode = "constrained"
            turn.switched = why
            messages[0] = {"role": "system", "content": system + "\n\n" + instructions("constrained", tools,
                                                                                     agent.max_tokens)}
    turn.memories = list(ctx.memories_stored)
    turn.files = list(ctx.files_written)
    turn.empty = not turn.text and not turn.errors
    return turn


def _call(agent: Agent, messages: list[dict], step: Step, turn: Turn, budget: int,
          on_delta=None) -> Completion | None:
    """One request of the turn, fitted to the context budget first. A server
    that says the request is over its context gets it once more, cut to the
    limit it named (or to what it tells of its context)."""
    for attempt in (1, 2):
        size = fit_messages(messages, budget)
        if size > budget * CHARS_PER_TOKEN:
            log.warning("%s: a request of about %d tokens exceeds the context budget of %d tokens",
                        agent.name, size // CHARS_PER_TOKEN, budget)
        turn.context_chars = max(turn.context_chars, size)
        try:
            completion = agent.client.chat(messages, max_tokens=agent.max_tokens, temperature=agent.temperature,
                                           on_delta=on_delta, **step.options())
            break
        except ContextOverflow as exc:
            limit = exc.limit or agent.client.context_size()
            smaller = (limit - agent.max_tokens) if limit and limit > agent.max_tokens else budget * 2 // 3
            if attempt == 2 or smaller >= budget or smaller < 1:
                turn.errors.append(str(exc))
                return None
            log.warning("%s: the server's context is %s tokens; the request is cut to %d and sent again",
                        agent.name, limit or "smaller", smaller)
            budget = agent.context_budget = smaller  # learned for the rest of the run
        except EndpointError as exc:
            turn.errors.append(str(exc))
            return None
    turn.requests += 1
    turn.prompt_tokens += completion.usage.prompt_tokens
    turn.cached_tokens += completion.usage.cached_tokens
    turn.context_tokens = max(turn.context_tokens, completion.usage.prompt_tokens)
    turn.completion_tokens += completion.usage.completion_tokens
    turn.seconds += completion.seconds
    turn.truncated += bool(completion.cut_off)
    problem = completion.problem(agent.max_tokens)
    if problem:
        turn.problems.append(problem)
    return completion
