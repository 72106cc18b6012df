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


class FakeLLM:
    """Scripted chat-completions server. ``script`` is consumed in order;
    ``per_agent`` scripts are consumed by the agent named in the system
    prompt; ``responder(request) -> Reply`` decides when set. When a script
    runs out the reply is ``default``."""

    def __init__(self, script: list[Reply] | None = None, per_agent: dict[str, list[Reply]] | None = None,
                 responder: Callable[[Recorded], Reply] | None = None, default: str = "Done for this round.",
                 delay: float = 0.0, port: int = 0):
        self.script = list(script or [])
        self.per_agent = {k: list(v) for k, v in (per_agent or {}).items()}
        self.responder = responder
        self.default = default
        self.delay = delay
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

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
                if self.path == "/health":
                    self._send(200, json.dumps({"status": "ok"}))
                elif self.path == "/v1/models":
                    self._send(200, json.dumps({"object": "list", "data": [{"id": "fake-model"}]}))
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
                if not self.path.endswith("/chat/completions") or body is None:
                    self._send(400, json.dumps({"error": "bad request"}))
                    return
                reply = fake._next(rec)
                if reply.delay or fake.delay:
                    time.sleep(reply.delay or fake.delay)
                if reply.body is not None:
                    self._send(reply.status, reply.body, reply.headers)
                    return
                self._send(reply.status, json.dumps(completion(reply, rec)), reply.headers)

        return Handler


def completion(reply: Reply, request: Recorded) -> dict:
    message: dict = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
            for i, (name, args) in enumerate(reply.tool_calls)]
    body = {"id": "chatcmpl-fake", "object": "chat.completion", "model": "fake-model",
            "choices": [{"index": 0, "message": message,
                         "finish_reason": reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")}]}
    if reply.usage:
        prompt = sum(len(json.dumps(m)) for m in request.messages) // 4
        body["usage"] = {"prompt_tokens": prompt, "completion_tokens": len(reply.text) // 4 + 1,
                         "total_tokens": prompt + len(reply.text) // 4 + 1}
    return body


if __name__ == "__main__":  # pragma: no cover
    import argparse

    parser = argparse.ArgumentParser(description="scripted OpenAI-compatible server")
    parser.add_argument("--port", type=int, default=8080)
    opts = parser.parse_args()
    server = FakeLLM(port=opts.port).start()
    print(f"listening on {server.url}")
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()
