"""Tool calls that a model wrote as text instead of structured ``tool_calls``.

Many local models (Hermes, Qwen, small Gemma builds) answer a tool request
with the call in their text. Only two shapes are accepted, so ordinary prose
that happens to contain JSON is never run:

* ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks, also
  with the closing tag missing at the end of the reply;
* a reply that is, as a whole, one JSON object with ``name`` and
  ``arguments`` (or ``parameters``), optionally inside a ```json fence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
_FENCE = re.compile(r"\A```(?:json)?\s*(.*?)\s*```\Z", re.DOTALL)
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)


@dataclass
class TextCall:
    """A tool call found in a reply's text; ``arguments`` is still raw."""

    name: str
    arguments: object


def strip_thinking(text: str) -> str:
    """Drop ``<think>…</think>`` blocks, and a reasoning prefix whose opening
    tag was in the prompt template (only ``</think>`` appears)."""
    text = _THINK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    if text.lstrip().startswith("<think>"):
        # Cut off mid-thought: nothing after it is an answer.
        return ""
    return text.strip()


def _as_call(obj: object) -> TextCall | None:
    if not isinstance(obj, dict):
        return None
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    if "arguments" in obj:
        args = obj["arguments"]
    elif "parameters" in obj:
        args = obj["parameters"]
    else:
        return None
    return TextCall(name=name.strip(), arguments=args)


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def parse_text_calls(text: str) -> tuple[list[TextCall], str]:
    """Return the calls found in ``text`` and the text that remains.

    A ``<tool_call>`` block whose content is not a call is kept as text, so
    nothing the model wrote is silently lost.
    """
    if not text:
        return [], text
    if "<tool_call>" in text:
        calls: list[TextCall] = []

        def take(match: re.Match) -> str:
            call = _as_call(_loads(match.group(1).strip()))
            if call is None:
                return match.group(0)
            calls.append(call)
            return ""

        rest = _BLOCK.sub(take, text)
        return calls, rest.strip()
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    if stripped.startswith("{") and stripped.endswith("}"):
        call = _as_call(_loads(stripped))
        if call is not None:
            return [call], ""
    return [], text
