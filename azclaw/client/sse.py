"""Server-sent events of a streamed chat completion, put back together.

Servers send the same reply in different pieces, and all are accepted:

* llama.cpp and vLLM: ``delta.tool_calls`` items keyed by ``index``; the
  first piece of a call has its ``id`` and ``name``, later pieces only
  fragments of ``arguments``;
* Ollama: each call whole in one delta (arguments complete, sometimes as an
  object), with or without an ``index``;
* usage in a last chunk with no choices (``stream_options.include_usage``),
  llama.cpp's ``timings`` beside it; an ``error`` object in the middle of a
  stream.

The result is the body a non-streamed request would have returned, so one
parser (``completion.parse_completion``) reads both. Parsing is linear in the
bytes received.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .transport import MAX_REPLY_BYTES, decode_text

PROGRESS_EVERY = 0.1  # seconds between two progress callbacks


class StreamError(Exception):
    """The stream carried an error object, or a line longer than the cap."""

    def __init__(self, message: str, body: object = None):
        super().__init__(message)
        self.body = body


@dataclass
class Progress:
    """How far a streamed reply has come, for a live console. ``text`` (the
    reply's text so far, ``<think>`` blocks included) is joined when read."""

    tokens: int = 0  # content, reasoning and argument pieces received (one per token on most servers)
    chars: int = 0  # characters of text so far
    tool: str = ""  # the name of the tool call being written, if any
    thinking: bool = False  # the last pieces were reasoning
    seconds: float = 0.0
    endpoint: str = ""
    parts: list[str] = field(default_factory=list, repr=False)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def events(chunks: Iterable[bytes], limit: int = MAX_REPLY_BYTES) -> Iterable[str]:
    """The ``data`` of each event in an SSE byte stream (lines of several
    ``data:`` fields joined by newlines); comments and other fields skipped."""
    pending: list[bytes] = []  # the start of a line not yet ended
    pending_size = 0
    data: list[str] = []
    skip_lf = False  # the last chunk ended in the \r of a \r\n pair
    for chunk in chunks:
        start, n = 0, len(chunk)
        if skip_lf and chunk[:1] == b"\n":
            start = 1
        skip_lf = False
        nl = cr = -2  # where the next \n and \r are; -2: not searched yet
        while start < n:
            if nl != -1 and nl < start:
                nl = chunk.find(b"\n", start)
            if cr != -1 and cr < start:
                cr = chunk.find(b"\r", start)
            cut = min(p for p in (nl, cr, n) if p >= 0)
            if cut == n:
                pending.append(chunk[start:])
                pending_size += n - start
                if pending_size > limit:
                    raise StreamError(f"a streamed line longer than {limit // 1024} KB")
                break
            line = chunk[start:cut]
            if pending:
                line = b"".join(pending) + line
                pending, pending_size = [], 0
            start = cut + 1
            if cut == cr:  # \r\n ends one line, not two
                if start < n and chunk[start:start + 1] == b"\n":
                    start += 1
                elif start == n:
                    skip_lf = True
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                data.append(decode_text(value[1:] if value.startswith(b" ") else value))
    if pending:
        line = b"".join(pending)
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(decode_text(value[1:] if value.startswith(b" ") else value))
    if data:
        yield "\n".join(data)


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    whole: object = None  # arguments sent as an object (Ollama)


class Assembler:
    """Feeds on event data; ``body()`` is the equivalent non-streamed reply."""

    def __init__(self, on_progress: Callable[[Progress], None] | None = None, endpoint: str = "",
                 limit: int = MAX_REPLY_BYTES):
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[_Call] = []
        self._by_index: dict[object, _Call] = {}
        self.finish_reason = ""
        self.usage: object = None
        self.timings: object = None
        self.done = False
        self.size = 0
        self.limit = limit
        self.cut_off = ""  # "size" when the reply passed the cap
        self.progress = Progress(endpoint=endpoint, parts=self.text)
        self._on_progress = on_progress
        self._start = time.monotonic()
        self._last_report = 0.0

    def feed(self, data: str) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except (ValueError, RecursionError):
            return  # a keep-alive or a broken piece: the reply is judged as a whole at the end
        if not isinstance(chunk, dict):
            return
        if chunk.get("error") is not None:
            raise StreamError("error in the stream", chunk)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.timings = chunk["timings"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        if isinstance(choice.get("finish_reason"), str) and choice["finish_reason"]:
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        moved = False
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._grow(len(content))
            self.text.append(content)
            self.progress.chars += len(content)
            self.progress.thinking = False
            moved = True
        for key in ("reasoning_content", "reasoning"):
            piece = delta.get(key)
            if isinstance(piece, str) and piece:
                self._grow(len(piece))
                self.reasoning.append(piece)
                self.progress.thinking = True
                moved = True
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for item in calls:
                if isinstance(item, dict):
                    moved = self._call_piece(item) or moved
        if moved:
            self.progress.tokens += 1
            self._report()

    def _grow(self, n: int) -> None:
        self.size += n
        if self.size > self.limit:
            self.cut_off = "size"
            raise _Full

    def _call_piece(self, item: dict) -> bool:
        fn = item.get("function") if isinstance(item.get("function"), dict) else {}
        call_id = item.get("id") if isinstance(item.get("id"), str) else ""
        name = fn.get("name") if isinstance(fn.get("name"), str) else ""
        args = fn.get("arguments")
        index = item.get("index")
        key = index if isinstance(index, int) and not isinstance(index, bool) else None
        call = self._by_index.get(key) if key is not None else None
        if call is not None and call_id and call.id and call_id != call.id:
            call = None  # same index, another id: a server that numbers every call 0
        if call is None and key is None and self.calls and not call_id and not name:
            call = self.calls[-1]  # an unnumbered fragment continues the last call
        if call is None:
            call = _Call(id=call_id)
            self.calls.append(call)
            if key is not None:
                self._by_index[key] = call
        if name and not call.name:
            call.name = name
            self.progress.tool = name
        if call_id and not call.id:
            call.id = call_id
        if isinstance(args, str) and args:
            self._grow(len(args))
            call.arguments.append(args)
        elif isinstance(args, (dict, list)):
            call.whole = args
        return bool(name or args)

    def _report(self, force: bool = False) -> None:
        if self._on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_report < PROGRESS_EVERY:
            return
        self._last_report = now
        self.progress.seconds = now - self._start
        self._on_progress(self.progress)

    def body(self) -> dict:
        """The reply as a non-streamed request would have returned it."""
        message: dict = {"role": "assistant", "content": "".join(self.text)}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name,
                              "arguments": c.whole if c.whole is not None else "".join(c.arguments)}}
                for c in self.calls]
        body: dict = {"choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}]}
        if self.usage is not None:
            body["usage"] = self.usage
        if self.timings is not None:
            body["timings"] = self.timings
        return body

    @property
    def received(self) -> bool:
        """Whether any part of a reply arrived."""
        return bool(self.text or self.calls or self.reasoning or self.finish_reason)


class _Full(Exception):
    pass


def assemble(chunks: Iterable[bytes], assembler: Assembler) -> Assembler:
    """Feed every event of ``chunks`` to ``assembler``; stop at ``[DONE]`` or
    when the reply passed its size cap (``assembler.cut_off == "size"``)."""
    try:
        for data in events(chunks, assembler.limit):
            assembler.feed(data)
            if assembler.done:
                break
    except _Full:
        pass
    assembler._report(force=True)
    return assembler
