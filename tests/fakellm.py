"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted replies.

It records every request it receives (path, headers, JSON body) so tests
assert on what azclaw actually sent. Run it standalone for manual tries::

    python tests/fakellm.py --port 8080
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

_AGENT = re.compile(r"You are ([A-Za-z0-9_.-]+)\.")
_ROUND = re.compile(r"Current round: (\d+) of \d+")
GATE_TIMEOUT = 60.0


@dataclass
class Reply:
    """One scripted answer: text, tool calls, or an HTTP error."""

    text: str = ""
    tool_calls: list[tuple[str, object]] = field(default_factory=list)  # (name, args dict or raw str)
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: str | None = None  # raw body instead of a completion
    delay: float = 0.0
    finish_reason: str = ""
    usage: bool = True
    gate: threading.Event | None = None  # the reply waits until this is set (outside the lock)
    drop: bool = False  # close the connection without answering


def text(t: str, **kw) -> Reply:
    return Reply(text=t, **kw)


def call(name: str, args: object = None, **kw) -> Reply:
    return Reply(tool_calls=[(name, {} if args is None else args)], **kw)


def calls(*pairs, **kw) -> Reply:
    return Reply(tool_calls=list(pairs), **kw)


def error(status: int, **kw) -> Reply:
    return Reply(status=status, body=json.dumps({"error": {"message": f"scripted {status}"}}), **kw)


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict
    body: dict | None
    time: float

    @property
    def messages(self) -> list[dict]:
        return (self.body or {}).get("messages", [])

    @property
    def agent(self) -> str:
        system = next((m["content"] for m in self.messages if m.get("role") == "system"), "")
        found = _AGENT.search(system or "")
        return found.group(1) if found else ""

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in (self.body or {}).get("tools") or []]

    @property
    def size(self) -> int:
        return sum(len(m.get("content") or "") for m in self.messages)

    @property
    def system(self) -> str:
        return next((m.get("content") or "" for m in self.messages if m.get("role") == "system"), "")

    @property
    def user(self) -> str:
        """The first user message: the turn's prompt."""
        return next((m.get("content") or "" for m in self.messages if m.get("role") == "user"), "")

    @property
    def last(self) -> dict:
        return self.messages[-1] if self.messages else {}

    @property
    def round(self) -> int:
        """The round named in azclaw's system prompt (0 when absent)."""
        found = _ROUND.search(self.system)
        return int(found.group(1)) if found else 0

    @property
    def tool_results(self) -> list[str]:
        return [m.get("content") or "" for m in self.messages if m.get("role") == "tool"]

    @property
    def offers_tools(self) -> bool:
        return bool((self.body or {}).get("tools"))

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def raw(self) -> str:
        return json.dumps(self.body)


class FakeLLM:
    """Scripted chat-completions server. ``script`` is consumed in order;
    ``per_agent`` scripts are consumed by the agent named in the system
    prompt; ``responder(request) -> Reply`` decides when set. When a script
    runs out the reply is ``default``."""

    def __init__(self, script: list[Reply] | None = None, per_agent: dict[str, list[Reply]] | None = None,
                 responder: Callable[[Recorded], Reply] | None = None, default: str = "Done for this round.",
                 delay: float = 0.0, port: int = 0, tokens: tuple[int, int] | None = None,
                 routes: dict[str, object] | None = None, models: list[dict] | None = None,
                 text_calls: bool = False):
        self.script = list(script or [])
        # imitating other servers: extra GET/POST routes (path -> JSON body, or
        # (status, body)), the /v1/models entries, tool calls written as text
        self.routes = dict(routes or {})
        self.models = list(models) if models is not None else [{"id": "fake-model"}]
        self.text_calls = text_calls
        self.per_agent = {k: list(v) for k, v in (per_agent or {}).items()}
        self.responder = responder
        self.default = default
        self.delay = delay
        self.tokens = tokens  # (prompt, completion) reported for every reply when set
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        # a short poll keeps stop() quick: shutdown() waits for the next poll
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return self.base + "/v1/chat/completions"

    @property
    def chats(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def chats_of(self, agent: str) -> list[Recorded]:
        return [r for r in self.chats if r.agent == agent]

    def start(self) -> "FakeLLM":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _next(self, request: Recorded) -> Reply:
        with self.lock:
            if self.responder is not None:
                return self.responder(request)
            queue = self.per_agent.get(request.agent)
            if queue:
                return queue.pop(0)
            if self.script:
                return self.script.pop(0)
        return Reply(text=self.default)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: str, headers: dict | None = None):
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, str(v))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, body):
                rec = Recorded(self.command, self.path, dict(self.headers), body, time.monotonic())
                with fake.lock:
                    fake.requests.append(rec)
                return rec

            def do_GET(self):
                self._record(None)
                if self._route():
                    return
                if self.path == "/health":
                    self._send(200, json.dumps({"status": "ok"}))
                elif self.path == "/v1/models":
                    self._send(200, json.dumps({"object": "list", "data": fake.models}))
                else:
                    self._send(404, json.dumps({"error": "not found"}))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                rec = self._record(body)
                if self._route():
                    return
                if not self.path.endswith("/chat/completions") or body is None:
                    self._send(400, json.dumps({"error": "bad request"}))
                    return
                reply = fake._next(rec)
                if reply.gate is not None:
                    reply.gate.wait(GATE_TIMEOUT)
                if reply.delay or fake.delay:
                    time.sleep(reply.delay or fake.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if reply.body is not None:
                    self._send(reply.status, reply.body, reply.headers)
                    return
                self._send(reply.status, json.dumps(completion(reply, rec, fake.tokens, fake.text_calls)),
                           reply.headers)

            def _route(self) -> bool:
                if self.path not in fake.routes:
                    return False
                answer = fake.routes[self.path]
                status, body = answer if isinstance(answer, tuple) else (200, answer)
                self._send(status, json.dumps(body))
                return True

        return Handler


def completion(reply: Reply, request: Recorded, tokens: tuple[int, int] | None = None,
               text_calls: bool = False) -> dict:
    message: dict = {"role": "assistant", "content": reply.text}
    if reply.tool_calls and text_calls:  # as Hermes/Qwen-style models write them
        message["content"] = reply.text + "".join(
            f'<tool_call>{{"name": "{name}", "arguments": {args if isinstance(args, str) else json.dumps(args)}}}'
            "</tool_call>" for name, args in reply.tool_calls)
    elif reply.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
            for i, (name, args) in enumerate(reply.tool_calls)]
    body = {"id": "chatcmpl-fake", "object": "chat.completion", "model": "fake-model",
            "choices": [{"index": 0, "message": message,
                         "finish_reason": reply.finish_reason
                         or ("tool_calls" if reply.tool_calls and not text_calls else "stop")}]}
    if reply.usage and tokens is not None:
        body["usage"] = {"prompt_tokens": tokens[0], "completion_tokens": tokens[1],
                         "total_tokens": tokens[0] + tokens[1]}
    elif reply.usage:
        prompt = sum(len(json.dumps(m)) for m in request.messages) // 4
        body["usage"] = {"prompt_tokens": prompt, "completion_tokens": len(reply.text) // 4 + 1,
                         "total_tokens": prompt + len(reply.text) // 4 + 1}
    return body


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description="scripted OpenAI-compatible server")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--text-calls", action="store_true",
                        help="answer every request that offers tools with a <tool_call> text block")
    opts = parser.parse_args()
    remember = call("remember", {"text": "the fake server was here", "title": "fake"})
    server = FakeLLM(port=opts.port, text_calls=opts.text_calls,
                     responder=(lambda r: remember if r.offers_tools and not r.tool_results
                                and "Result of" not in r.raw else Reply(text="Done for this round."))
                     if opts.text_calls else None).start()
    print(f"listening on {server.url}")
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()
