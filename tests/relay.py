"""A recording relay on 127.0.0.1 in front of one real server, or of several
taken in turn (a plain round-robin balancer): every request is passed on as
it came, and its method, path, routing key and target are kept, so a test
counts what reached each worker behind a router (a real model server keeps
no such record). A server that does not answer is a 502. ``Quiet`` is the
request handler the test servers here share."""

from __future__ import annotations

import http.client
import itertools
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection", "upgrade"}


@dataclass
class Passed:
    method: str
    path: str
    key: str | None  # the request's x-smg-routing-key
    status: int
    target: str = ""  # host:port it was passed to


class Quiet(BaseHTTPRequestHandler):
    """HTTP/1.1, no log lines, and ``answer`` for a whole reply."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status: int, headers: dict, body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Relay:
    def __init__(self, target: str | list[str], header: str = "x-smg-routing-key", timeout: float = 600.0):
        self.targets = [urllib.parse.urlsplit(t) for t in ([target] if isinstance(target, str) else target)]
        self._turn = itertools.count()
        self.header = header
        self.timeout = timeout
        self.passed: list[Passed] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def chats(self) -> list[Passed]:
        with self.lock:
            return [p for p in self.passed if p.path.endswith("/chat/completions") and p.status == 200]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        relay = self

        class Handler(Quiet):
            def _pass(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                status, reply_headers, data = 502, {"Content-Type": "application/json"}, b'{"error": "no answer"}'
                target = relay.targets[next(relay._turn) % len(relay.targets)]
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=relay.timeout)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    status, data = resp.status, resp.read()
                    reply_headers = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
                except (OSError, http.client.HTTPException):
                    pass
                finally:
                    conn.close()
                with relay.lock:
                    relay.passed.append(Passed(self.command, self.path, self.headers.get(relay.header), status,
                                               f"{target.hostname}:{target.port}"))
                self.answer(status, reply_headers, data)

            do_GET = do_POST = _pass

        return Handler
