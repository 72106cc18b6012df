"""Constrained tool calls: the server must answer with JSON that matches a
schema built from the offered tools, and that JSON becomes the step's tool
call or the turn's final message.

Small local models rarely write a tool call on their own, in any syntax;
forced to fill in a schema they do (see the README's local-model table).
Every serious local server constrains its output to a JSON schema given in
the OpenAI request field ``response_format``.

One step's reply is one JSON object, one of these alternatives:

    {"tool": "recall", "arguments": {"query": "..."}}      one per offered tool
    {"tool": "reply", "arguments": {"message": "..."}}     the turn's final message

Every string is bounded (``maxLength``) from the step's ``max_tokens``, so a
call cannot be cut off in the middle: a model that goes on and on is made to
close the string and the object in time.

    step = step_format(tools, max_tokens=256)
    system_prompt += "\n\n" + instructions(step)
    payload["response_format"] = step.response_format()
    reply = parse_reply(completion.text, step)
    reply.calls / reply.message / reply.error
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .client.llm import ToolCall
from .client.textcalls import strip_thinking

REPLY = "reply"  # the name of the final-message alternative
SCHEMA_NAME = "azclaw_step"
# Bounds from the token budget. BPE vocabularies (32k-150k entries) spend 3-4
# characters of English or code per token; 3 keeps most calls inside the budget.
CHARS_PER_TOKEN = 3
OVERHEAD_TOKENS = 24  # {"tool": "...", "arguments": {...}}: keys, quotes, braces
MIN_STRING = 16
MAX_STRING = 8000  # longer bounds make grammars large and slow to advance
MAX_ITEMS = 16
# How a string argument shares its tool's character budget: (weight, cap).
_STRING_SHARES = {
    "content": (8, None), "code": (8, None), "text": (4, None), "message": (4, None),
    "title": (1, 80), "path": (1, 160), "directory": (1, 160), "query": (1, 200), "agent": (1, 40),
    "name": (1, 80),
}
_DEFAULT_SHARE = (2, 400)
_FENCE = re.compile(r"\A```(?:json)?\s*(.*?)\s*```\Z", re.DOTALL)


@dataclass
class StepFormat:
    """What one constrained step asks for: the schema and the names in it."""

    schema: dict
    tools: list[str]
    reply_name: str = REPLY
    allow_reply: bool = True
    max_tokens: int = 256

    def response_format(self, style: str = "json_schema") -> dict:
        return response_format(self.schema, style)


@dataclass
class ConstrainedReply:
    """A constrained reply, read: one call, or the final message, or why it
    is neither (``error``; the turn sends it back as an ERROR result)."""

    calls: list[ToolCall] = field(default_factory=list)
    message: str = ""
    error: str = ""
    final: bool = False  # the model chose the final-message alternative


def string_limits(params: dict[str, dict], budget_chars: int) -> dict[str, int]:
    """maxLength for each string argument, so that all of them together fit
    ``budget_chars``. Long-text arguments (content, code, text) get the most;
    names and paths are capped by what they need. An argument's own
    ``maxLength`` is kept when it is smaller."""
    strings = {n: s for n, s in params.items() if isinstance(s, dict) and s.get("type", "string") == "string"}
    if not strings:
        return {}
    shares = {n: _STRING_SHARES.get(n, _DEFAULT_SHARE) for n in strings}
    total = sum(w for w, _ in shares.values())
    limits = {n: budget_chars * w // total for n, (w, _) in shares.items()}
    capped = {n: min(limits[n], cap) for n, (_, cap) in shares.items() if cap is not None}
    spare = sum(limits[n] - capped[n] for n in capped)
    limits.update(capped)
    open_ = [n for n, (_, cap) in shares.items() if cap is None]
    if spare and open_:
        weight = sum(shares[n][0] for n in open_)
        for n in open_:
            limits[n] += spare * shares[n][0] // weight
    for n, spec in strings.items():
        own = spec.get("maxLength")
        limit = max(MIN_STRING, min(limits[n], MAX_STRING))
        if isinstance(own, int) and not isinstance(own, bool) and own >= 0:
            limit = min(limit, own)
        limits[n] = limit
    return limits


def _bounded(spec: dict, limit: int) -> dict:
    """A copy of one argument's schema with its strings and arrays bounded."""
    spec = dict(spec)
    kind = spec.get("type", "string")
    if kind == "string":
        spec["type"] = "string"
        if not isinstance(spec.get("enum"), list):  # a choice of names is bounded already
            spec["maxLength"] = limit
    elif kind == "array":
        items = spec.get("items") if isinstance(spec.get("items"), dict) else {}
        own = spec.get("maxItems")
        count = min(own, MAX_ITEMS) if isinstance(own, int) and not isinstance(own, bool) and own >= 0 else MAX_ITEMS
        spec["maxItems"] = count
        if items.get("type", "string") == "string":
            spec["items"] = {**items, "type": "string", "maxLength": max(MIN_STRING, limit // max(count, 1))}
    return spec


def budget_chars(max_tokens: int) -> int:
    """Characters of argument text that fit a reply of ``max_tokens``."""
    return max(MIN_STRING * 4, (max_tokens - OVERHEAD_TOKENS) * CHARS_PER_TOKEN)


def arguments_schema(tool, max_tokens: int) -> dict:
    """One tool's arguments as a closed object with bounded strings."""
    params = tool.params or {}
    limits = string_limits(params, budget_chars(max_tokens) - sum(len(n) + 6 for n in params))
    props = {n: _bounded(spec if isinstance(spec, dict) else {"type": "string"}, limits.get(n, MIN_STRING * 8))
             for n, spec in params.items()}
    required = [n for n in tool.required if n in props]
    for name in required:  # a required string left empty is a call that can only fail ("text is empty")
        if props[name].get("type") == "string":
            props[name]["minLength"] = 1
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def _alternative(name: str, arguments: dict) -> dict:
    # an enum of one: every schema-to-grammar converter knows it ("const" not everywhere)
    return {"type": "object", "properties": {"tool": {"type": "string", "enum": [name]}, "arguments": arguments},
            "required": ["tool", "arguments"], "additionalProperties": False}


def reply_name(tools) -> str:
    """The final-message alternative's name: ``reply``, unless a tool has it."""
    names = {t.name for t in tools}
    name = REPLY
    while name in names:
        name += "_"
    return name


def step_format(tools, max_tokens: int = 256, allow_reply: bool = True) -> StepFormat:
    """The schema of one step: one alternative per tool, and the final
    message unless ``allow_reply`` is False (a step that must call a tool).
    With no tools only the final message is offered."""
    tools = list(tools)
    final = reply_name(tools)
    message = {"type": "object", "properties": {"message": {
        "type": "string", "maxLength": max(MIN_STRING, min(MAX_STRING, budget_chars(max_tokens)))}},
        "required": ["message"], "additionalProperties": False}
    alternatives = [_alternative(t.name, arguments_schema(t, max_tokens)) for t in tools]
    allow_reply = allow_reply or not alternatives
    if allow_reply:
        alternatives.append(_alternative(final, message))
    schema = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    return StepFormat(schema=schema, tools=[t.name for t in tools], reply_name=final,
                      allow_reply=allow_reply, max_tokens=max_tokens)


def instructions(step: StepFormat) -> str:
    """What to add to the system prompt in constrained mode: the grammar
    forces the shape, but a model fills it in better when it was told.
    No placeholders: small models copy ``<your message>`` word for word."""
    names = ", ".join(step.tools)
    if not step.tools:
        return (f'Answer with one JSON object and nothing else: "tool" is "{step.reply_name}" and '
                '"arguments" holds "message", your message to the team.')
    text = (f'Answer with one JSON object and nothing else. "tool" names the tool to call ({names}) and '
            '"arguments" holds its arguments; you get its result and answer again.')
    if step.allow_reply:
        text += f' To end your turn, "tool" is "{step.reply_name}" and "arguments" holds "message".'
    return text


def response_format(schema: dict, style: str = "json_schema") -> dict:
    """The request's ``response_format`` for ``schema``.

    ``json_schema`` (OpenAI's shape) is read by llama.cpp's llama-server,
    vLLM, Ollama's /v1 endpoint and LM Studio. ``json_object`` with a
    ``schema`` beside it is the shape llama-cpp-python's server validates
    (it rejects ``json_schema`` with HTTP 422); llama-server reads it too,
    but vLLM and Ollama take ``json_object`` as "any JSON" and drop the
    schema. ``strict`` is False: the local servers enforce the schema
    without it, and OpenAI's strict mode refuses a root ``anyOf``.
    """
    if style == "json_object":
        return {"type": "json_object", "schema": schema}
    if style != "json_schema":
        raise ValueError(f"response_format style {style!r}: expected json_schema or json_object")
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": False}}


def _first_object(text: str) -> tuple[object, str]:
    """The JSON value at the start of ``text`` (after a ```json fence) and
    an error ('' when it parsed)."""
    text = strip_thinking(text or "", keep_json=True).strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    if not text:
        return None, "the reply is empty"
    if not text.startswith(("{", "[")) and "{" in text:
        text = text[text.index("{"):]  # "Sure! {...}" from a server that does not enforce the schema
    try:
        value, _end = json.JSONDecoder(strict=False).raw_decode(text)  # raw newlines in strings: meant
    except ValueError as exc:
        return None, f"the reply is not valid JSON ({getattr(exc, 'msg', exc)} at char {getattr(exc, 'pos', 0)})"
    except RecursionError:
        return None, "the reply is not valid JSON (nested too deeply)"
    return value, ""


def parse_reply(text: str, step: StepFormat | None = None, finish_reason: str = "",
                call_id: str = "call_json_0") -> ConstrainedReply:
    """Read one constrained reply; never raises. Also accepts ``name`` for
    ``tool`` and ``parameters`` for ``arguments`` (servers that do not enforce
    the schema get near misses right)."""
    final = step.reply_name if step else REPLY
    choices = ", ".join((step.tools if step else []) + ([final] if not step or step.allow_reply else []))
    expected = f'expected {{"tool": one of {choices}, "arguments": {{...}}}}'
    value, error = _first_object(text if isinstance(text, str) else "")
    if error:
        if finish_reason == "length":
            error += "; it was cut off at max_tokens"
        return ConstrainedReply(error=f"{error}; {expected}")
    if not isinstance(value, dict):
        return ConstrainedReply(error=f"the reply is a JSON {type(value).__name__}, not an object; {expected}")
    name = value.get("tool", value.get("name"))
    args = value.get("arguments", value.get("parameters", {}))
    if not isinstance(name, str) or not name.strip():
        return ConstrainedReply(error=f"the reply names no tool; {expected}")
    name = name.strip()
    if name == final and (step is None or step.allow_reply):
        message = args.get("message") if isinstance(args, dict) else args
        if not isinstance(message, str):
            return ConstrainedReply(error=f'{final} needs {{"message": "text"}}; {expected}')
        return ConstrainedReply(message=message.strip(), final=True)
    if isinstance(args, str):  # arguments as a JSON string, OpenAI style
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            pass
    if not isinstance(args, dict):
        return ConstrainedReply(calls=[ToolCall(id=call_id, name=name, arguments=None,
                                                raw_arguments=json.dumps(args, ensure_ascii=False),
                                                error=f"arguments must be a JSON object, got {type(args).__name__}")])
    return ConstrainedReply(calls=[ToolCall(id=call_id, name=name, arguments=args,
                                            raw_arguments=json.dumps(args, ensure_ascii=False))])


def assistant_message(text: str) -> dict:
    """The model's step as it goes back into the next request: its JSON as
    plain text, never as ``tool_calls`` (a malformed call replayed as
    tool_calls makes some servers reject every later request)."""
    return {"role": "assistant", "content": text}


def result_message(name: str, content: str) -> dict:
    """A tool's result (or an ERROR) for the next constrained step: a user
    message, which every chat template renders (a ``tool`` role needs the
    template's tool support)."""
    return {"role": "user", "content": f"Result of {name}:\n{content}"}
