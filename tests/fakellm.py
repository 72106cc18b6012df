"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted replies.

It records every request it receives (path, headers, JSON body) so tests
assert on what azclaw actually sent. Run it standalone for manual tries::

    python tests/fakellm.py --port 8080

Besides plain replies it imitates what real servers do:

* streaming: a request with ``"stream": true`` is answered with server-sent
  events, tool calls in pieces as llama.cpp, vLLM or Ollama send them
  (``style``); ``FakeLLM(stream="no")`` ignores the flag (a server without
  streaming), ``stream="reject"`` answers it with HTTP 400;
* stalls and slow streams (``Reply(stall_after=N)``, ``Reply(pause=s)``);
* faults below HTTP: ``Reply(raw=b"...")`` writes exact bytes (see ``fault()``:
  a bad status line, 101 headers, broken chunking, a cut body),
  ``Reply(trickle=s)`` sends the reply one byte every ``s`` seconds;
* error wordings of real servers: ``overflow("vllm")`` (context length),
  ``model_not_found()``; ``/props`` and ``/v1/models`` through ``routes``
  and ``models``.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

_AGENT = re.compile(r"You are ([A-Za-z0-9_.-]+)\.")
_ROUND = re.compile(r"Current round: (\d+) of \d+")
GATE_TIMEOUT = 600.0  # a gate the test never opens lets its reply go after this; a bound, never a wait


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
    # below HTTP: exact bytes written to the socket, then the connection is closed
    raw: bytes | None = None
    trickle: float = 0.0  # seconds between single bytes of the reply
    trickle_from: int = 0  # bytes sent at once before the trickle starts (e.g. the headers)
    cut: int | None = None  # send only this many bytes of the body (Content-Length says all), then close
    # streaming (when the request asks for it and the server streams)
    stream: bool | None = None  # False: answer this one plain
    style: str | None = None  # "vllm", "llama.cpp" or "ollama" (default: the server's)
    pieces: int = 4  # characters per streamed piece of text or arguments
    pause: float = 0.0  # seconds between streamed events (slow but alive)
    stall_after: int | None = None  # stop after this many events and hold the connection
    stall: float = GATE_TIMEOUT  # how long a stall holds it (the server's stop ends it sooner)
    events: list | None = None  # the stream's events as given (dicts or strings), instead of generated ones
    cached: int | None = None  # prompt tokens reported as served from the cache


def text(t: str, **kw) -> Reply:
    return Reply(text=t, **kw)


def call(name: str, args: object = None, **kw) -> Reply:
    return Reply(tool_calls=[(name, {} if args is None else args)], **kw)


def calls(*pairs, **kw) -> Reply:
    return Reply(tool_calls=list(pairs), **kw)


def error(status: int, **kw) -> Reply:
    return Reply(status=status, body=json.dumps({"error": {"message": f"scripted {status}"}}), **kw)


def _overflow_bodies(n_ctx: int, prompt: int) -> dict[str, tuple[int, dict]]:
    return {
        "llama.cpp": (400, {"error": {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": prompt,
                                      "n_ctx": n_ctx, "message": f"request ({prompt} tokens) exceeds the available "
                                                                 f"context size ({n_ctx} tokens), try increasing it"}}),
        "llama.cpp-old": (400, {"error": {"code": 400, "type": "invalid_request_error", "message":
                                          "the request exceeds the available context size, try increasing the "
                                          "context size or enable context shift"}}),
        "vllm": (400, {"object": "error", "type": "BadRequestError", "param": None, "code": 400, "message":
                       f"This model's maximum context length is {n_ctx} tokens. However, you requested {prompt} "
                       f"tokens ({prompt - 256} in the messages, 256 in the completion). Please reduce the length "
                       "of the messages or completion."}),
        "openai": (400, {"error": {"type": "invalid_request_error", "param": "messages",
                                   "code": "context_length_exceeded", "message":
                                   f"This model's maximum context length is {n_ctx} tokens. However, your messages "
                                   f"resulted in {prompt} tokens. Please reduce the length of the messages."}}),
        "ollama": (400, {"error": {"type": "api_error", "param": None, "code": None,
                                   "message": "the input length exceeds the context length"}}),
        "llama-cpp-python": (400, {"error": {"type": "invalid_request_error", "param": "messages", "code":
                                             "context_length_exceeded", "message":
                                             f"Requested tokens ({prompt}) exceed context window of {n_ctx}"}}),
    }


OVERFLOW_SERVERS = tuple(_overflow_bodies(1, 2))


def overflow(server: str = "llama.cpp", n_ctx: int = 4096, prompt: int = 5000, **kw) -> Reply:
    """HTTP 400 for a request longer than the context, in ``server``'s words."""
    status, body = _overflow_bodies(n_ctx, prompt)[server]
    return Reply(status=status, body=json.dumps(body), **kw)


def model_not_found(server: str = "vllm", model: str = "default", **kw) -> Reply:
    """HTTP 404 for a model name the server does not serve, in its words."""
    body = ({"object": "error", "message": f"The model `{model}` does not exist.", "type": "NotFoundError",
             "param": None, "code": 404} if server == "vllm" else
            {"error": {"message": f'model "{model}" not found, try pulling it first', "type": "api_error"}})
    return Reply(status=404, body=json.dumps(body), **kw)


def redirect(location: str, status: int = 302, **kw) -> Reply:
    return Reply(status=status, headers={"Location": location}, body="", **kw)


_COMPLETION = b'{"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}'
FAULTS = {
    "bad_status_line": b"HELLO THIS IS NOT HTTP\r\n\r\n",
    "no_status_line": b"",
    "many_headers": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n",
    "long_header": b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
    "long_status_line": b"HTTP/1.1 200 " + b"O" * 70000 + b"\r\n\r\n",
    "broken_chunked": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"ZZZ\r\n{}\r\n0\r\n\r\n",
    "cut_chunked": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"400\r\n{\"choices\": [",
    "cut_body": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                + _COMPLETION[:30],
    "http_0_9": _COMPLETION,
}


def fault(name: str, **kw) -> Reply:
    """A reply that breaks HTTP itself (see ``FAULTS``)."""
    return Reply(raw=FAULTS[name], **kw)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # a client may close its connection at any time (a stream read up to
        # [DONE], a request given up): that is not the server's error
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


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

    @property
    def streamed(self) -> bool:
        """The request asked for a streamed reply."""
        return bool((self.body or {}).get("stream"))


class FakeLLM:
    """Scripted chat-completions server. ``script`` is consumed in order;
    ``per_agent`` scripts are consumed by the agent named in the system
    prompt; ``responder(request) -> Reply`` decides when set. When a script
    runs out the reply is ``default``."""

    def __init__(self, script: list[Reply] | None = None, per_agent: dict[str, list[Reply]] | None = None,
                 responder: Callable[[Recorded], Reply] | None = None, default: str = "Done for this round.",
                 delay: float = 0.0, port: int = 0, tokens: tuple[int, int] | None = None,
                 routes: dict[str, object] | None = None, models: list[dict] | None = None,
                 text_calls: bool = False, stream: str = "yes", style: str = "vllm"):
        self.script = list(script or [])
        # imitating other servers: extra GET/POST routes (path -> JSON body, or
        # (status, body), or a function of the Recorded request returning one;
        # a body given as bytes is sent as it is),
        # the /v1/models entries, tool calls written as text
        self.routes = dict(routes or {})
        if stream not in ("yes", "no", "reject"):
            raise ValueError(f"stream: 'yes', 'no' or 'reject', not {stream!r}")
        self.stream = stream  # "yes": SSE when asked; "no": the flag is ignored; "reject": HTTP 400
        self.style = style
        self.stopping = threading.Event()  # ends stalls and trickles when the server stops
        self.models = list(models) if models is not None else [{"id": "fake-model"}]
        self.text_calls = text_calls
        self.per_agent = {k: list(v) for k, v in (per_agent or {}).items()}
        self.responder = responder
        self.default = default
        self.delay = delay
        self.tokens = tokens  # (prompt, completion) reported for every reply when set
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.connections: set = set()  # open client connections (kill() cuts them)
        self.in_flight = 0  # chat requests being answered now
        self.most_at_once = 0  # the most chat requests it was answering at one time
        self.server = _Server(("127.0.0.1", port), self._handler())
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
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def kill(self) -> None:
        """Stop as a killed server does: the kept-alive connections (a
        router's) are cut too, not served on by their threads."""
        self.stop()
        with self.lock:
            open_now, self.connections = list(self.connections), set()
        for sock in open_now:
            try:
                sock.shutdown(2)
            except OSError:
                pass

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
            disable_nagle_algorithm = True  # streamed events go out at once, as real servers send them

            def setup(self):
                super().setup()
                with fake.lock:
                    if fake.stopping.is_set():
                        self.close_connection = True
                    fake.connections.add(self.connection)

            def finish(self):
                with fake.lock:
                    fake.connections.discard(self.connection)
                super().finish()

            def handle_one_request(self):
                if fake.stopping.is_set():  # a stopped server serves no kept-alive connection
                    self.close_connection = True
                    return
                super().handle_one_request()

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: str | bytes, headers: dict | None = None):
                data = body.encode("utf-8") if isinstance(body, str) else body
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

            def _write(self, data: bytes, trickle: float = 0.0, start: int = 0) -> None:
                """Bytes straight to the socket, one at a time when trickling
                (after the first ``start`` bytes)."""
                try:
                    if not trickle:
                        self.wfile.write(data)
                        return
                    self.wfile.write(data[:start])
                    for i in range(start, len(data)):
                        if fake.stopping.wait(trickle):
                            return
                        self.wfile.write(data[i:i + 1])
                except OSError:
                    pass

            def _raw_reply(self, reply: Reply, status: int = 200, body: bytes = b"",
                           headers: dict | None = None) -> None:
                """A whole reply written by hand: exact bytes, cut or trickled."""
                self.close_connection = True
                if reply.raw is not None:
                    self._write(reply.raw, reply.trickle, reply.trickle_from)
                    return
                head = [f"HTTP/1.1 {status} OK", "Content-Type: application/json",
                        f"Content-Length: {len(body)}", "Connection: close"]
                head += [f"{k}: {v}" for k, v in (headers or {}).items()]
                data = ("\r\n".join(head) + "\r\n\r\n").encode() + (body if reply.cut is None else body[:reply.cut])
                self._write(data, reply.trickle, reply.trickle_from)

            def _stream(self, reply: Reply, rec: Recorded) -> None:
                style = reply.style or fake.style
                events = reply.events if reply.events is not None else stream_events(
                    reply, rec, fake.tokens, fake.text_calls, style)
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                for k, v in reply.headers.items():
                    self.send_header(k, str(v))
                self.end_headers()
                try:
                    for n, event in enumerate(events):
                        if reply.stall_after is not None and n == reply.stall_after:
                            fake.stopping.wait(reply.stall)
                            self.close_connection = True
                            return
                        if n and reply.pause:
                            time.sleep(reply.pause)
                        text = event if isinstance(event, str) else json.dumps(event)
                        data = f"data: {text}\n\n".encode("utf-8", "surrogatepass")
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True

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
                with fake.lock:
                    fake.in_flight += 1
                    fake.most_at_once = max(fake.most_at_once, fake.in_flight)
                self.counted = True
                try:
                    self._post()
                finally:
                    self._answered()

            def _answered(self):
                """The request is no longer worked on (its reply goes out now):
                counted before the reply leaves, so the client's next request
                never overlaps it in ``most_at_once``."""
                if self.counted:
                    self.counted = False
                    with fake.lock:
                        fake.in_flight -= 1

            def _post(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                rec = self._record(body)
                if self._route():
                    return
                if not self.path.endswith("/chat/completions") or not isinstance(body, dict):
                    self._send(400, json.dumps({"error": "bad request"}))
                    return
                if rec.streamed and fake.stream == "reject":
                    self._send(400, json.dumps({"error": {"message": "streaming is not supported",
                                                          "type": "invalid_request_error"}}))
                    return
                reply = fake._next(rec)
                if reply.gate is not None:
                    reply.gate.wait(GATE_TIMEOUT)
                if reply.delay or fake.delay:
                    time.sleep(reply.delay or fake.delay)
                self._answered()
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if reply.raw is not None:
                    self._raw_reply(reply)
                    return
                style = reply.style or fake.style
                if reply.body is not None:
                    body = reply.body.encode("utf-8", "surrogatepass") if isinstance(reply.body, str) else reply.body
                elif (rec.streamed and fake.stream == "yes" and reply.stream is not False) or reply.events:
                    self._stream(reply, rec)
                    return
                else:
                    body = json.dumps(completion(reply, rec, fake.tokens, fake.text_calls, style)).encode()
                if reply.cut is not None or reply.trickle:
                    self._raw_reply(reply, reply.status, body, reply.headers)
                    return
                self._send(reply.status, body, reply.headers)

            def _route(self) -> bool:
                if self.path not in fake.routes:
                    return False
                answer = fake.routes[self.path]
                if callable(answer):
                    answer = answer(fake.requests[-1])
                status, body = answer if isinstance(answer, tuple) else (200, answer)
                self._send(status, body if isinstance(body, bytes) else json.dumps(body))
                return True

        return Handler


def completion(reply: Reply, request: Recorded, tokens: tuple[int, int] | None = None,
               text_calls: bool = False, style: str = "vllm") -> dict:
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
    if "usage" in body and style == "llama.cpp":
        usage = body["usage"]
        cached = reply.cached or 0
        body["timings"] = {"cache_n": cached, "prompt_n": usage["prompt_tokens"] - cached,
                           "predicted_n": usage["completion_tokens"]}
    elif "usage" in body and reply.cached is not None:
        body["usage"]["prompt_tokens_details"] = {"cached_tokens": reply.cached}
    return body


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i:i + size] for i in range(0, len(text), size)]


def stream_events(reply: Reply, request: Recorded, tokens: tuple[int, int] | None = None,
                  text_calls: bool = False, style: str = "vllm") -> list:
    """The reply as the events a streaming server sends: text in pieces, tool
    calls keyed by index with their arguments in fragments (llama.cpp,
    vLLM), or each call whole without an index (Ollama); usage in a last
    chunk when the request asked for it."""
    body = completion(reply, request, tokens, text_calls, style)
    choice = body["choices"][0]
    message = choice["message"]
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": "fake-model"}

    def chunk(delta: dict, finish=None) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events: list = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": p}) for p in _pieces(message.get("content") or "", reply.pieces)]
    calls = message.get("tool_calls") or []
    if style == "ollama" and calls:
        events.append(chunk({"tool_calls": [{"id": c["id"], "type": "function", "function": c["function"]}
                                            for c in calls]}))
    elif calls:
        for i, c in enumerate(calls):
            events.append(chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                                                 "function": {"name": c["function"]["name"], "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
                       for p in _pieces(c["function"]["arguments"], reply.pieces)]
    final = chunk({}, choice["finish_reason"])
    if "timings" in body:
        final["timings"] = body["timings"]
    events.append(final)
    if "usage" in body and ((request.body or {}).get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": body["usage"]})
    events.append("[DONE]")
    return events


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
