"""What a chat-completions reply means: the values azclaw keeps of it, and
the parser that makes them out of whatever JSON a server sent.

Every field is checked for its type and range, so a reply is data: a body
with no choices is an ``EndpointError``; odd fields (a 400-digit token count,
an id that is a list, a lone surrogate in the text) are dropped or repaired,
never raised later in the journal or the stats.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..errors import ContextOverflow, EndpointError
from ..numbers import count
from .textcalls import parse_text_calls, strip_thinking

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class ToolCall:
    """One call the model asked for. ``arguments`` is None when the model's
    arguments were not a JSON object; ``error`` then says why."""

    id: str
    name: str
    arguments: dict | None
    raw_arguments: str = ""
    error: str = ""


@dataclass
class Usage:
    """Token counts as the server reported them (0 when it did not).
    ``cached_tokens``: prompt tokens the server took from its cache.
    ``estimated``: the server streamed its reply without counts (as
    llama-cpp-python does), so completion tokens are the pieces received
    and prompt tokens the request's characters / 4."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False


@dataclass
class Completion:
    """What one chat-completions call returned, reasoning stripped.

    ``cut_off`` says why a reply is incomplete: ``"length"`` (the server
    stopped at max_tokens), ``"timeout"`` (the request's time ran out while
    the reply streamed in; the part received is here), ``"size"`` (the reply
    passed ``MAX_REPLY_BYTES``); empty when it is whole. ``thinking_only``:
    the model wrote only reasoning, nothing was left after removing it.
    """

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = ""
    seconds: float = 0.0
    endpoint: str = ""
    text_calls: bool = False  # the calls were parsed out of the text
    cut_off: str = ""
    thinking_only: bool = False
    streamed: bool = False
    attempts: int = 1  # requests made for this completion (retries included)
    model: str = ""  # the model name sent

    @property
    def empty(self) -> bool:
        """No text and no tool call."""
        return not self.text.strip() and not self.tool_calls

    def problem(self, max_tokens: int | None = None) -> str:
        """One line on what is wrong with this reply for a warning, or ''."""
        if self.cut_off == "length":
            limit = f" {max_tokens}" if max_tokens else ""
            what = "reply cut off at max_tokens" + limit
            return what + (" (inside <think>, nothing left)" if self.thinking_only else "")
        if self.cut_off == "timeout":
            return "reply cut off: the request's time ran out while it streamed in"
        if self.cut_off == "size":
            return "reply cut off: it passed the size limit of the client"
        if self.thinking_only:
            return "empty after removing <think>"
        if self.empty:
            return "empty reply"
        return ""


def clean(text: str) -> str:
    """``text`` as valid Unicode: lone surrogates (from ``\\ud800`` escapes)
    become U+FFFD, so it can be written as UTF-8 anywhere."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _str(value: object) -> str:
    return clean(value) if isinstance(value, str) else ""


def _parse_arguments(raw: object) -> tuple[dict | None, str, str]:
    """Arguments arrive as a JSON string (OpenAI, llama.cpp, vLLM) or an
    object (Ollama, text calls); return (dict or None, raw text, error)."""
    if raw is None or raw == "":
        return {}, "", ""
    if not isinstance(raw, str):
        try:
            raw = json.dumps(raw, ensure_ascii=False)
        except (ValueError, TypeError, RecursionError):
            return None, "", "arguments could not be read (nested too deep)"
        if not raw.startswith("{"):
            return None, clean(raw)[:2000], f"arguments must be a JSON object, got {raw[:20]}"
    raw = clean(raw)
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return None, raw, f"arguments are not valid JSON ({exc.msg} at char {exc.pos})"
    except RecursionError:
        return None, raw, "arguments are nested too deep"
    if not isinstance(value, dict):
        return None, raw, f"arguments must be a JSON object, got {type(value).__name__}"
    if "\\u" in raw:  # escapes may have made lone surrogates: dumped, cleaned, read again
        try:
            value = json.loads(clean(json.dumps(value, ensure_ascii=False)))
        except (ValueError, RecursionError):
            return None, raw, "arguments could not be read"
    return value, raw, ""


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _usage(data: dict) -> Usage:
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    timings = data.get("timings") if isinstance(data.get("timings"), dict) else {}
    details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
    prompt, completion = count(usage.get("prompt_tokens")), count(usage.get("completion_tokens"))
    cached = count(details.get("cached_tokens")) or count(timings.get("cache_n"))
    if not usage and timings:  # llama.cpp without usage: its own counters
        prompt = count(timings.get("prompt_n")) + count(timings.get("cache_n"))
        completion = count(timings.get("predicted_n"))
    return Usage(prompt, completion, min(cached, prompt) if prompt else cached)


def parse_completion(data: object, endpoint: str = "") -> Completion:
    """Turn a chat-completions response body into a Completion; raise
    EndpointError when it has no usable choice."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise EndpointError(f"{endpoint}: response has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    raw_text = clean(_content_text(message.get("content")))
    text = strip_thinking(raw_text)
    calls: list[ToolCall] = []
    raw_calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else []
    for n, raw in enumerate(raw_calls):
        raw = raw if isinstance(raw, dict) else {}
        fn = raw.get("function") if isinstance(raw.get("function"), dict) else {}
        args, raw_args, error = _parse_arguments(fn.get("arguments"))
        calls.append(ToolCall(id=_str(raw.get("id"))[:200] or f"call_{n}", name=_str(fn.get("name"))[:200],
                              arguments=args, raw_arguments=raw_args, error=error))
    from_text = False
    if not calls:
        found, rest = parse_text_calls(text)
        if found:
            from_text = True
            text = rest
            for n, tc in enumerate(found):
                args, raw_args, error = _parse_arguments(tc.arguments)
                calls.append(ToolCall(id=f"call_text_{n}", name=clean(tc.name)[:200], arguments=args,
                                      raw_arguments=raw_args, error=error))
    finish = _str(choice.get("finish_reason"))[:40]
    reasoning = _str(message.get("reasoning_content")) or _str(message.get("reasoning"))
    thinking_only = not text.strip() and not calls and bool(raw_text.strip() or reasoning.strip())
    return Completion(
        text=text,
        tool_calls=calls,
        usage=_usage(data),
        finish_reason=finish,
        endpoint=endpoint,
        text_calls=from_text,
        cut_off="length" if finish == "length" else "",
        thinking_only=thinking_only,
    )


# -- error replies ---------------------------------------------------------------------

_OVERFLOW = ("context_length_exceeded", "exceed_context_size_error", "exceeds the available context size",
             "maximum context length", "maximum model length", "exceed context window",
             "exceeds the context length", "exceeds context length", "exceeds maximum context length",
             "exceeded max context length", "context length of only", "context window is full",
             "prompt is too long", "too many tokens in the prompt")
_LIMIT = (re.compile(r"context size \((\d+) tokens?\)"), re.compile(r"maximum context length is (\d+)"),
          re.compile(r"maximum model length (?:is |of )?(\d+)"), re.compile(r"context window of (\d+)"),
          re.compile(r"context length of only (\d+)"), re.compile(r"max(?:imum)? context length \((\d+)\)"))
_REQUESTED = (re.compile(r"request \((\d+) tokens?\)"), re.compile(r"you requested (\d+) tokens"),
              re.compile(r"requested tokens \((\d+)\)"), re.compile(r"resulted in (\d+) tokens"),
              re.compile(r"prompt \(length (\d+)\)"))


def error_message(body: object, raw: str) -> str:
    """The message of an error reply: ``error.message`` (OpenAI, vLLM,
    llama.cpp), ``error`` (Ollama), ``message`` or ``detail``; else the body."""
    found: object = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            found = err.get("message")
        elif isinstance(err, str):
            found = err
        if not isinstance(found, str):
            found = body.get("message") if isinstance(body.get("message"), str) else body.get("detail")
    text = found if isinstance(found, str) else raw
    return " ".join(clean(text)[:2000].split())[:300]


def context_overflow(url: str, status: int, body: object, raw: str) -> ContextOverflow | None:
    """A ContextOverflow when an error reply says the request did not fit the
    server's context (llama.cpp, llama-cpp-python, vLLM, OpenAI, Ollama, LM
    Studio wordings), with the server's limit when it is given."""
    low = raw[:MAX_SCAN].lower()
    err = body.get("error") if isinstance(body, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    kind = err.get("type") if isinstance(err, dict) else None
    if not any(w in low for w in _OVERFLOW) and code != "context_length_exceeded" \
            and kind != "exceed_context_size_error":
        return None
    limit = count(err.get("n_ctx")) if isinstance(err, dict) else 0
    requested = count(err.get("n_prompt_tokens")) if isinstance(err, dict) else 0
    for pattern in _LIMIT:
        if limit:
            break
        found = pattern.search(low)
        limit = count(int(found.group(1))) if found and len(found.group(1)) < 10 else 0
    for pattern in _REQUESTED:
        if requested:
            break
        found = pattern.search(low)
        requested = count(int(found.group(1))) if found and len(found.group(1)) < 10 else 0
    message = error_message(body, raw)
    said = f"; the server's context is {limit} tokens" if limit else ""
    return ContextOverflow(f"{url}: HTTP {status} the request does not fit the model's context{said} "
                           f"({message})", limit=limit or None, prompt_tokens=requested or None)


MAX_SCAN = 64 * 1024
