"""One agent's turn: model calls and tool steps until a final text.

1. The agent is sent its system prompt and one user message.
2. If the reply asks for tools, each call runs (a call that repeats one
   already made in this turn, identically or nearly: ``repeats.py``, is
   skipped) and the results go back to the model. The first step, like
   every other, may answer at once; a constrained step offers only the
   tools that could do something now (``Tool.is_ready``: no ``recall``
   before anything is stored, no ``read_file`` in an empty project).
3. That repeats for at most ``max_steps`` tool steps; after the last one, or
   a step of nothing but repeats, the model is told to answer without tools.
4. The reply without tool calls is the turn's message to the team.
5. An ``auto`` agent moves down its ladder of tool modes when a step shows
   the calls do not travel (``toolmodes.step_move``), or after turns in a
   row without any call (``toolmodes.prose_move``); ``Turn.switched`` says why.

``take_turn`` returns a ``Turn``: the one record of a turn. Its ``calls``
(every tool use, in order) are the truth; the counts (``tool_calls``,
``tool_errors``, ``tools``, ``memories``, ``files``) are read from them.
The loop folds turns into the run state, the journal writes ``to_dict``,
and ``status``, ``report`` and ``show`` read ``from_dict`` back.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields

from .client import Completion
from .errors import ContextOverflow, EndpointError
from .numbers import number, whole
from .prompt import CHARS_PER_TOKEN, fit_messages
from .repeats import Made, find_repeat
from .toolmodes import Move, Step, append_step, prose_move, read_reply, retold, step_move
from .tools.registry import Effect, Tool, ToolContext, ToolRegistry, ToolResult

log = logging.getLogger("azclaw")

DEFAULT_TOOL_STEPS = 8
ALL_REPEATED = ("Every tool call you just made repeats one you already made in this turn. "
                "Work with the results you have: give your final message to the team now, without tools.")
STEPS_USED = ("You have used all your tool steps for this turn. "
              "Give your final message to the team now, without tools.")
SAY_SOMETHING = ("Your reply was empty. Write your message to the team now, in a few sentences: what you did, "
                 "what you decided, what should happen next.")
MAX_CALLS_PER_STEP = 16  # tool calls run from one reply; the rest get TOO_MANY, so one reply cannot run for hours
TOO_MANY = (f"ERROR: not run: one reply may make at most {MAX_CALLS_PER_STEP} tool calls; "
            "this one came after them. Make it again in your next step if you still need it.")
AUDIT_CHARS = 2000  # of a call's arguments and of its result, in the journal
AUDIT_FULL = {"run_python": 65536}  # what model-written code ran, and what it printed, is always kept
NOT_PARSED = ""  # the tool name of a reply's calls that did not parse, or that were over the cap


@dataclass
class ToolUse:
    """One tool call of a turn, as the audit trail keeps it: arguments and
    result cut to ``AUDIT_CHARS`` (their full length beside them).
    ``tool`` is empty for a reply whose calls did not parse (``result``
    says why); ``effect`` is what the call changed, as the tool told it."""

    tool: str
    arguments: str  # the arguments as the model sent them (JSON text)
    result: str  # what the model got back; "ERROR: ..." when ``ok`` is false
    ok: bool = True
    seconds: float = 0.0
    step: int = 0  # the turn's tool step it belongs to (0 is the first)
    arguments_chars: int = 0
    result_chars: int = 0
    duplicate: bool = False  # repeated an earlier call of the turn: not run again (``ok``: did that one work)
    effect: Effect | None = None
    repeat: str = ""  # how it repeated it: same, echo, timestamp, near (repeats.py)

    @classmethod
    def of(cls, tool: str, arguments: str, result: str, ok: bool, seconds: float, step: int,
           effect: Effect | None = None, repeat: str = "") -> "ToolUse":
        limit = AUDIT_FULL.get(tool, AUDIT_CHARS)
        return cls(tool, _cut(arguments, limit), _cut(result, limit), ok, round(seconds, 3), step, len(arguments),
                   len(result), bool(repeat), effect, repeat)

    @property
    def counted(self) -> bool:
        """A call that ran (not a repeat skipped, not a reply that did not parse)."""
        return bool(self.tool) and not self.duplicate

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.effect is None:
            del data["effect"]
        if not self.repeat:
            del data["repeat"]
        return data

    @classmethod
    def from_dict(cls, data) -> "ToolUse | None":
        if not isinstance(data, dict):
            return None
        return cls(_text(data.get("tool")), _text(data.get("arguments")), _text(data.get("result")),
                   data.get("ok") is not False, number(data.get("seconds")), whole(data.get("step")),
                   whole(data.get("arguments_chars")), whole(data.get("result_chars")), data.get("duplicate") is True,
                   Effect.from_dict(data.get("effect")), _text(data.get("repeat")))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" [... {len(text) - limit} more characters]"


def _text(value) -> str:
    return value if isinstance(value, str) else ""


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
    cached_tokens: int = 0  # prompt tokens the server served from its cache, where it says so
    seconds: float = 0.0  # waiting for the model
    context_chars: int = 0
    context_tokens: int = 0
    calls: list[ToolUse] = field(default_factory=list)  # the audit trail: every tool call, in order
    errors: list[str] = field(default_factory=list)
    empty: bool = False  # the model answered, with nothing
    truncated: int = 0  # replies cut off (at max_tokens, or by the time or size limit)
    mode: str = ""  # how the tool calls travelled: native, text or constrained (toolmodes.py)
    switched: str = ""  # why an auto agent changed its tool mode in this turn
    problems: list[str] = field(default_factory=list)  # what was wrong with replies, one line each
    dropped: int = 0  # messages of the conversation left out to fit the context budget (full, window modes)
    probe: bool = False  # an answer to a coherence probe, not a round's turn (not journaled: the event says)
    retried: bool = False  # an attempt of a round in which every turn failed: its round ran again (not journaled)

    # -- read from the calls ------------------------------------------------
    @property
    def tools(self) -> dict[str, int]:
        """Calls that ran, by tool name."""
        return dict(Counter(u.tool for u in self.calls if u.counted))

    @property
    def tool_calls(self) -> int:
        return sum(1 for u in self.calls if u.counted)

    @property
    def tool_errors(self) -> int:
        """Calls that gave the model an error, replies whose calls did not parse included
        (a repeat of a failed call is a repeat, not another error)."""
        return sum(1 for u in self.calls if not u.ok and not u.duplicate)

    @property
    def repeats(self) -> int:
        """Calls skipped because they repeated an earlier one of the turn."""
        return sum(1 for u in self.calls if u.duplicate)

    @property
    def memories(self) -> list[str]:
        """Titles stored with remember (not a repeat of text already stored: that stores nothing)."""
        return [u.effect.target for u in self.calls
                if u.effect and u.effect.kind == "memory" and u.effect.status != "repeat"]

    @property
    def files(self) -> list[str]:
        """Paths written in the output folder (not a rewrite with the same bytes: that changes nothing)."""
        return [u.effect.target for u in self.calls
                if u.effect and u.effect.kind == "file" and u.effect.status != "unchanged"]

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

    # -- the journal line ---------------------------------------------------
    def to_dict(self) -> dict:
        """The turn's journal fields (the event name says whether it is a probe)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("probe", "retried", "calls")}
        data["seconds"] = round(self.seconds, 3)
        data["calls"] = [u.to_dict() for u in self.calls]
        # read from the calls, written for people and scripts that read the journal with jq
        data.update(tools=self.tools, tool_calls=self.tool_calls, tool_errors=self.tool_errors,
                    repeats=self.repeats, memories=self.memories, files=self.files,
                    tokens_per_second=round(self.tokens_per_second, 2))
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Turn":
        """A turn from a journal line of any version; what is missing or of
        the wrong type reads as empty, never raises."""
        turn = cls(agent=_text(data.get("agent")), round=whole(data.get("round")),
                   probe=data.get("event") == "probe")
        turn.phase = data["phase"] if isinstance(data.get("phase"), str) else None
        turn.text = _text(data.get("text") if "text" in data else data.get("answer"))
        for f in fields(cls):
            value = data.get(f.name)
            if f.type == "int" and f.name != "round":
                setattr(turn, f.name, whole(value))
            elif f.type == "float":
                setattr(turn, f.name, number(value))
            elif f.type == "str" and f.name in ("mode", "switched"):
                setattr(turn, f.name, _text(value))
            elif f.type == "list[str]":
                setattr(turn, f.name, [str(v) for v in value] if isinstance(value, list) else [])
        turn.empty = data.get("empty") is True
        uses = data.get("calls")
        turn.calls = [u for u in map(ToolUse.from_dict, uses if isinstance(uses, list) else []) if u]
        _old_counts(turn, data)
        return turn


def _old_counts(turn: Turn, data: dict) -> None:
    """Journals before version 4 kept the counts beside the calls (and
    before version 3 no calls at all): rebuild the calls' effects and, where
    there are no calls, calls that stand for the counts."""
    memories = [str(m) for m in data["memories"]] if isinstance(data.get("memories"), list) else []
    files = [str(f) for f in data["files"]] if isinstance(data.get("files"), list) else []
    if any(u.effect for u in turn.calls) or not (memories or files or isinstance(data.get("tool_calls"), dict)):
        return
    if not turn.calls:  # version 1-2: the counts by tool name, and the errors
        counts = data.get("tool_calls") if isinstance(data.get("tool_calls"), dict) else {}
        turn.calls = [ToolUse(str(name), "", "") for name, n in counts.items() for _ in range(max(0, whole(n)))]
        for use in turn.calls[:whole(data.get("tool_errors"))]:
            use.ok = False
    for kind, tool, targets in (("memory", "remember", memories), ("file", "write_file", files)):
        uses = iter([u for u in turn.calls if u.tool == tool and u.ok and u.counted])
        for target in targets:
            use = next(uses, None)
            if use is None:  # the counts said less than the effects: an effect without a call to count
                use = ToolUse(NOT_PARSED, "", "")
                turn.calls.append(use)
            use.effect = Effect(kind, target)


def take_turn(session, system: str, user: str, tools: list[Tool], registry: ToolRegistry,
              ctx: ToolContext, *, phase: str | None = None, max_steps: int = DEFAULT_TOOL_STEPS,
              probe: bool = False, on_delta=None) -> Turn:
    """Run one turn of ``session``'s agent with ``tools`` offered; never
    raises for what the model or the server does (failures are in
    ``Turn.errors``). ``on_delta(progress)`` follows a streamed reply."""
    agent = session.agent
    turn = Turn(agent.name, ctx.round, phase, probe=probe, mode=session.tool_mode)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    team = list(getattr(ctx.memory, "roots", None) or [])
    tools = [t.for_team(team) for t in tools] if team else list(tools)  # recall's agent: one of the team
    offered = list(tools)
    made: list[Made] = []
    used_ids: set[str] = set()
    for n_step in range(max_steps + 1):
        if n_step == max_steps and offered:
            messages.append({"role": "user", "content": STEPS_USED})
            offered = []
        # a constrained step offers what could do something now (its schema is no part of the prompt)
        fitting = [t for t in offered if t.is_ready(ctx)] if session.tool_mode == "constrained" else offered
        step = Step.of(session.tool_mode, fitting, agent.max_tokens)
        completion = _call(session, messages, step, turn, on_delta)
        if completion is None:
            break
        reading = read_reply(step, completion)
        results = [] if reading.final else _run_calls(reading, n_step, offered, registry, ctx, turn, made, used_ids)
        if not reading.final:
            if reading.error:
                turn.calls.append(ToolUse.of(NOT_PARSED, completion.text, f"ERROR: {reading.error}", False, 0.0,
                                             n_step))
            append_step(messages, step, completion, reading, results)
            if results and all(r.duplicate for r in results):
                messages.append({"role": "user", "content": ALL_REPEATED})
                offered = []
        move = step_move(step, completion, reading, results) if agent.tool_mode == "auto" else None
        if move:  # from the next step on, and for the rest of the run
            messages[0] = {"role": "system", "content": retold(messages[0]["content"], session.tool_mode, move.mode,
                                                               tools, agent.max_tokens)}
            _move(session, turn, move)
            if not reading.final:
                turn.mode = move.mode
        if reading.final:
            turn.text = reading.text
            break
    if not turn.text and not turn.errors and not probe:
        _nudge_once(session, messages, turn, on_delta)
    turn.empty = not turn.text and not turn.errors
    if agent.tool_mode == "auto" and tools and not probe and not turn.errors:
        _count_prose(session, turn)
    return turn


def _run_calls(reading, n_step: int, offered: list[Tool], registry: ToolRegistry, ctx: ToolContext, turn: Turn,
               made: list[Made], used_ids: set[str]) -> list[ToolResult]:
    """Run a step's calls (repeats skipped, those past ``MAX_CALLS_PER_STEP``
    refused); their uses go into ``turn.calls``."""
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
        repeat = find_repeat(call.name, call.arguments, call.raw_arguments or "", made)
        if repeat is not None:
            earlier_ok = made[repeat.of].ok
            content = repeat.result(earlier_ok)
            results.append(ToolResult(call.id, call.name, content, ok=earlier_ok, duplicate=True))
            turn.calls.append(ToolUse.of(call.name, call.raw_arguments or arguments, content, earlier_ok, 0.0, n_step,
                                         repeat=repeat.kind))
            continue
        started = time.monotonic()
        outcome = registry.execute(call, ctx, offered)
        turn.calls.append(ToolUse.of(call.name, call.raw_arguments or arguments, outcome.content, outcome.ok,
                                     time.monotonic() - started, n_step, effect=outcome.effect))
        made.append(Made(call.name, call.arguments, call.raw_arguments or "", outcome.content, outcome.ok))
        results.append(outcome)
    if len(reading.calls) > MAX_CALLS_PER_STEP:  # one entry in the audit trail for all the refused
        refused = len(reading.calls) - MAX_CALLS_PER_STEP
        turn.calls.append(ToolUse.of(NOT_PARSED, f"{refused} more calls", TOO_MANY, False, 0.0, n_step))
        turn.problems.append(f"a reply made {len(reading.calls)} tool calls: the first {MAX_CALLS_PER_STEP} "
                             f"were taken, the other {refused} refused")
    return results


def _move(session, turn: Turn, move: Move) -> None:
    """An auto agent's tool calls go ``move.mode`` from now on, for the rest of the run."""
    session.tool_mode = move.mode
    session.prose_turns, session.calls_travel = 0, False
    turn.switched = move.reason


def _count_prose(session, turn: Turn) -> None:
    """Count the auto agent's turns in a row without a tool call until a
    call has come through in its mode (then not answering with one is the
    model's choice); enough of them move it one rung down from its next
    turn on (``turn.mode`` stays the mode this turn ran in)."""
    if turn.switched or session.calls_travel:
        return
    if any(u.counted for u in turn.calls):
        session.calls_travel = True
        return
    session.prose_turns = 0 if turn.calls else session.prose_turns + 1
    move = prose_move(session.tool_mode, session.prose_turns)
    if move:
        _move(session, turn, move)


def _nudge_once(session, messages: list[dict], turn: Turn, on_delta) -> None:
    """An empty or cut-off reply gets one more request, with a short nudge
    and no tools: real models often answer with nothing after a tool step,
    or with only their thinking."""
    messages.append({"role": "assistant", "content": "(no reply)"})
    messages.append({"role": "user", "content": SAY_SOMETHING})
    step = Step.of(session.tool_mode, [], session.agent.max_tokens)
    completion = _call(session, messages, step, turn, on_delta)
    if completion is not None:
        turn.text = read_reply(step, completion).text


def _call(session, messages: list[dict], step: Step, turn: Turn, on_delta=None) -> Completion | None:
    """One request of the turn, fitted to the context budget first. A server
    that says the request is over its context gets it once more, cut to the
    limit it named (or to what it tells of its context)."""
    agent, budget = session.agent, session.context_budget
    for attempt in (1, 2):
        size = fit_messages(messages, budget)
        if size > budget * CHARS_PER_TOKEN:
            log.warning("%s: a request of about %d tokens exceeds the context budget of %d tokens",
                        agent.name, size // CHARS_PER_TOKEN, budget)
        turn.context_chars = max(turn.context_chars, size)
        try:
            completion = session.client.chat(messages, max_tokens=agent.max_tokens, temperature=agent.temperature,
                                             on_delta=on_delta, **step.options())
            break
        except ContextOverflow as exc:
            limit = exc.limit or session.client.context_size()
            smaller = (limit - agent.max_tokens) if limit and limit > agent.max_tokens else budget * 2 // 3
            if attempt == 2 or smaller >= budget or smaller < 1:
                turn.errors.append(str(exc))
                return None
            log.warning("%s: the server's context is %s tokens; the request is cut to %d and sent again",
                        agent.name, limit or "smaller", smaller)
            budget = session.context_budget = smaller  # learned for the rest of the run
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
