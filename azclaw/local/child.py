"""Inside the bundled model server's process: azclaw's chat format, a small
ASGI layer over llama-cpp-python's server, and a watchdog on azclaw.

    python -m azclaw.local.child --parent PID -- <llama_cpp.server flags>

Nothing here runs in azclaw's own process (it imports llama_cpp).

The ASGI layer does four things llama-cpp-python's server does not:

* it accepts OpenAI's ``response_format`` shape ``{"type": "json_schema",
  "json_schema": {"schema": ...}}`` (llama-cpp-python validates only
  ``{"type": "json_object", "schema": ...}`` and answers 422 otherwise), so
  azclaw sends one shape to every server;
* it reports the prompt tokens served from the KV cache, as llama.cpp's
  server and vLLM do: ``usage.prompt_tokens_details.cached_tokens``;
* it takes OpenAI's ``max_completion_tokens`` as ``max_tokens`` (routers such
  as sglang-router pass ``max_tokens`` on under that name, and
  llama-cpp-python 0.3 would otherwise not limit the reply at all);
* it answers ``GET /health`` as llama.cpp's server does (``{"status": "ok"}``
  once the model is loaded), which routers such as sglang-router require of
  a worker before they send it anything.
"""

from __future__ import annotations

import contextvars
import json
import os
import signal
import sys
import threading
import time

STOP_TIMEOUT = 10.0
CHATML_FORMAT = "azclaw-chatml"
_REQUEST: contextvars.ContextVar[dict | None] = contextvars.ContextVar("azclaw_request", default=None)


# -- chat formats ---------------------------------------------------------------------

def _turns(messages: list, tools: list | None) -> tuple[str, list[tuple[str, str]]]:
    """(system prompt, [(role, text)]) with tool steps written as text, so a
    model without tool support in its template sees the ``<tool_call>`` shape
    azclaw parses, and tool results as user turns."""
    system = "\n\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
    if tools:
        first = tools[0].get("function", {})
        example = {"name": first.get("name", ""),
                   "arguments": {p: "..." for p in first.get("parameters", {}).get("required", [])}}
        system += ("\n\nTo use a tool, answer with only the call, in this form, and wait for its result:\n"
                   f"<tool_call>{json.dumps(example)}</tool_call>")
    turns: list[tuple[str, str]] = []
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        content = str(content or "")
        if role == "assistant":
            calls = "".join('<tool_call>{{"name": "{}", "arguments": {}}}</tool_call>'.format(
                c.get("function", {}).get("name", ""), c.get("function", {}).get("arguments") or "{}")
                for c in m.get("tool_calls") or [])
            turns.append(("assistant", (content + calls).strip()))
        elif role == "tool":
            turns.append(("user", f"Result of {m.get('name') or 'the tool'}:\n{content}"))
        elif role == "user":
            turns.append(("user", content))
    return system.strip(), turns


def chatml_turns(messages: list, tools: list | None) -> str:
    """ChatML markup (SmolLM2, Qwen, Hermes): the template in SmolLM2's file,
    made safe for assistant turns without content and for tool results."""
    system, turns = _turns(messages, tools)
    if system:
        turns.insert(0, ("system", system))
    prompt = "".join(f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns)
    return prompt + "<|im_start|>assistant\n"


def register_formats() -> None:
    from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format

    @register_chat_format(CHATML_FORMAT)
    def format_azclaw_chatml(messages, tools=None, **kwargs):
        return ChatFormatterResponse(prompt=chatml_turns(messages, tools), stop=["<|im_end|>"])


# -- what llama-cpp-python's server does not do -------------------------------------------

def openai_response_format(body: bytes) -> bytes:
    """Rewrite ``{"type": "json_schema", "json_schema": {"schema": S}}`` as
    ``{"type": "json_object", "schema": S}``; anything else is left as it is."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    fmt = data.get("response_format") if isinstance(data, dict) else None
    if not (isinstance(fmt, dict) and fmt.get("type") == "json_schema"):
        return body
    wrapper = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else {}
    schema = wrapper.get("schema", fmt.get("schema"))
    data["response_format"] = {"type": "json_object", **({"schema": schema} if isinstance(schema, dict) else {})}
    return json.dumps(data).encode("utf-8")


def openai_token_limit(body: bytes) -> bytes:
    """``max_completion_tokens`` (OpenAI's newer name) as ``max_tokens``, the
    name llama-cpp-python reads; a request that names both keeps ``max_tokens``."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or "max_completion_tokens" not in data:
        return body
    limit = data.pop("max_completion_tokens")
    data.setdefault("max_tokens", limit)
    return json.dumps(data).encode("utf-8")


def with_cached_tokens(body: bytes, cached: int | None) -> bytes:
    if cached is None:
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return body
    usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return json.dumps(data).encode("utf-8")


class Shim:
    """ASGI middleware around llama-cpp-python's app (see the module doc)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") == "http" and scope.get("method") in ("GET", "HEAD") and scope.get("path") == "/health":
            body = b'{"status": "ok"}'
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
            return
        if scope.get("type") != "http" or scope.get("method") != "POST" \
                or not scope.get("path", "").endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = openai_token_limit(openai_response_format(body))
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        box: dict = {}
        _REQUEST.set(box)
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
                json_reply = any(k.lower() == b"content-type" and v.startswith(b"application/json")
                                 for k, v in message.get("headers", []))
                start["_json"] = json_reply
                if not json_reply:
                    await send(message)
                return
            if message["type"] != "http.response.body" or not start.get("_json"):
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            out = with_cached_tokens(b"".join(chunks), box.get("cached"))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({"type": "http.response.start", "status": start["status"],
                        "headers": headers + [(b"content-length", str(len(out)).encode())]})
            await send({"type": "http.response.body", "body": out})

        await self.app(scope, replay, capture)


def _count_cached_tokens() -> None:
    """Note, per request, how many prompt tokens the KV cache already holds
    (what ``Llama.generate`` will not evaluate again)."""
    from llama_cpp import Llama

    generate = Llama.generate

    def counting_generate(self, tokens, *args, **kwargs):
        box = _REQUEST.get()
        if box is not None and "cached" not in box:
            tokens = list(tokens)
            held = list(self._input_ids[: self.n_tokens]) if self.n_tokens > 0 else []
            same = 0
            for a, b in zip(held, tokens):
                if a != b:
                    break
                same += 1
            box["cached"] = max(0, min(same, len(tokens) - 1))
        return generate(self, tokens, *args, **kwargs)

    Llama.generate = counting_generate


def _watch_parent(parent: int) -> None:
    """Exit when azclaw is gone (killed with SIGKILL, say): no orphan server."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_TIMEOUT)
    os._exit(1)


def main(argv: list[str]) -> None:
    import runpy

    import llama_cpp.server.app as app_module

    parent = int(argv[argv.index("--parent") + 1])
    server_args = argv[argv.index("--") + 1:]
    register_formats()
    _count_cached_tokens()
    create_app = app_module.create_app
    app_module.create_app = lambda *a, **kw: Shim(create_app(*a, **kw))
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    sys.argv = ["llama_cpp.server", *server_args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":  # pragma: no cover - the server process
    main(sys.argv[1:])
