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
from dataclasses import dataclass

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"


@dataclass
class TextCall:
    """A tool call found in a reply's text; ``arguments`` is still raw."""

    name: str
    arguments: object


def strip_thinking(text: str, keep_json: bool = False) -> str:
    """Drop ``<think>…</think>`` blocks, and a reasoning prefix whose opening
    tag was in the prompt template (only ``</think>`` appears). With
    ``keep_json``, what starts as JSON after the blocks is the answer, a
    ``</think>`` in one of its strings included."""
    text = _drop_think_blocks(text)
    if "</think>" in text and not (keep_json and text.lstrip().startswith(("{", "[", "```"))):
        text = text.rsplit("</think>", 1)[1]
    if text.lstrip().startswith("<think>"):
        # Cut off mid-thought: nothing after it is an answer.
        return ""
    return text.strip()


def _drop_think_blocks(text: str) -> str:
    """Remove each ``<think>`` … first ``</think>`` after it, in one pass
    (a regex would rescan the rest of the text for every unclosed tag)."""
    if "<think>" not in text:
        return text
    kept: list[str] = []
    pos = 0
    while True:
        start = text.find("<think>", pos)
        end = text.find("</think>", start + 7) if start >= 0 else -1
        if end < 0:
            kept.append(text[pos:])
            return "".join(kept)
        kept.append(text[pos:start])
        pos = end + 8


def _unfence(text: str) -> str:
    """The inside of a reply that is one ```json fence (``text`` stripped)."""
    if len(text) < 6 or not text.startswith("```") or not text.endswith("```"):
        return text
    inner = text[3:-3]
    if inner.startswith("json"):
        inner = inner[4:]
    return inner.strip()


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


_DECODER = json.JSONDecoder()


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _block(text: str, begin: int, budget: list[int]) -> tuple[TextCall | None, int]:
    """The call in the block whose content starts at ``begin``, and where the
    block ends: at the first ``</tool_call>``, or, when what comes before it
    is not a call, after a JSON object read for itself (a ``</tool_call>``
    inside one of its strings). Reading an object costs up to the rest of the
    text (a failed ``raw_decode`` counts lines from its start), so those
    reads share ``budget`` characters: the parse stays linear."""
    end = text.find(_CLOSE, begin)
    stop = len(text) if end < 0 else end + len(_CLOSE)
    call = _as_call(_loads(text[begin:end if end >= 0 else len(text)].strip()))
    if call is not None or end < 0:
        return call, stop
    i = _skip_space(text, begin)
    if not text.startswith("{", i) or budget[0] < len(text) - i:
        return None, stop
    budget[0] -= len(text) - i
    try:
        obj, j = _DECODER.raw_decode(text[i:])
    except (ValueError, RecursionError):
        return None, stop
    k = _skip_space(text, i + j)
    call = _as_call(obj)
    if call is not None and text.startswith(_CLOSE, k):
        return call, k + len(_CLOSE)
    if call is not None and k == len(text):
        return call, k
    return None, stop


def parse_text_calls(text: str) -> tuple[list[TextCall], str]:
    """Return the calls found in ``text`` and the text that remains.

    A ``<tool_call>`` block whose content is not a call is kept as text, so
    nothing the model wrote is silently lost.
    """
    if not text:
        return [], text
    if _OPEN in text:
        calls: list[TextCall] = []
        kept: list[str] = []
        pos = 0
        budget = [4 * len(text)]
        while True:
            start = text.find(_OPEN, pos)
            if start < 0:
                kept.append(text[pos:])
                break
            call, stop = _block(text, start + len(_OPEN), budget)
            kept.append(text[pos:start] if call is not None else text[pos:stop])
            if call is not None:
                calls.append(call)
            pos = stop
        return (calls, "".join(kept).strip()) if calls else ([], text)
    stripped = _unfence(text.strip())
    if stripped.startswith("{") and stripped.endswith("}"):
        call = _as_call(_loads(stripped))
        if call is not None:
            return [call], ""
    return [], text
