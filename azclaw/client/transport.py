"""One HTTP exchange with a hard time bound, a size cap and a redirect policy.

``http.client`` is used directly (not urllib) so that azclaw decides:

* the deadline covers the whole exchange (connect, headers, every read): a
  watchdog shuts the socket when it passes, so a server trickling one byte a
  second cannot hold a request longer than its timeout;
* a streamed body that goes silent for ``stall`` seconds ends the exchange;
* no body is read past ``MAX_REPLY_BYTES``;
* redirects are followed only to the same scheme, host and port, so the API
  key never travels to another host;
* $http_proxy, $https_proxy and $no_proxy are honoured as urllib does;
* whatever the server sends (a bad status line, 101 headers, a line of 70 KB,
  broken chunked encoding, a cut body) ends as a ``Failure``, never as an
  exception of ``http.client``.
"""

from __future__ import annotations

import base64
import heapq
import http.client
import itertools
import json
import math
import os
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

# The largest reply body azclaw reads (and the largest text a streamed reply
# may accumulate): a chat reply is a few KB; 4 MB is far above any real one
# and keeps a runaway server from filling memory, the journal and checkpoints.
MAX_REPLY_BYTES = 4 * 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024  # what is read of an error reply, for its message
MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_READ = 64 * 1024


class Failure(Exception):
    """An exchange that gave no usable answer. ``kind`` is one of ``down``
    (nothing answered, or the connection broke), ``timeout``, ``stall``,
    ``protocol`` (the server sent something that is not HTTP), ``too_big``,
    ``redirect``."""

    def __init__(self, url: str, kind: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.kind = kind
        self.reason = reason


@dataclass
class Deadline:
    """When the whole exchange must be over."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    @property
    def left(self) -> float:
        return self.start + self.seconds - time.monotonic()


def _reason(exc: BaseException) -> str:
    """A short text for what went wrong in the transport."""
    if isinstance(exc, http.client.IncompleteRead):
        return f"reply cut short ({len(exc.partial)} bytes read, more expected)"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, http.client.BadStatusLine):
        return f"not an HTTP reply (status line {str(exc)[:60]!r})"
    if isinstance(exc, http.client.LineTooLong):
        return f"malformed HTTP reply ({exc})"
    if isinstance(exc, http.client.HTTPException):
        return f"malformed HTTP reply ({type(exc).__name__}: {str(exc)[:100]})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror or exc})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {str(exc)[:100]}"


def _kind(exc: BaseException) -> str:
    if isinstance(exc, (http.client.RemoteDisconnected, ConnectionError)):
        return "down"
    if isinstance(exc, (http.client.HTTPException, ValueError, UnicodeError)):
        return "protocol"
    return "down"


class Watchdog:
    """One thread that ends every exchange whose deadline passed. A thread
    per exchange cost about a millisecond to start on a busy machine, on
    every request; this one sleeps until the next deadline."""

    def __init__(self):
        self._lock = threading.Condition()
        self._heap: list[list] = []  # [when, seq, callback or None (cancelled)]
        self._seq = itertools.count()
        self._cancelled = 0
        self._thread: threading.Thread | None = None
        if hasattr(os, "register_at_fork"):  # a child starts with no watchdog thread and a fresh lock
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Condition()
        self._heap, self._cancelled, self._thread = [], 0, None

    def add(self, seconds: float, callback) -> list:
        """Call ``callback()`` in ``seconds``; returns what ``cancel`` takes."""
        entry = [time.monotonic() + seconds, next(self._seq), callback]
        with self._lock:
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="azclaw-watchdog")
                self._thread.start()
            elif self._heap[0] is entry:
                self._lock.notify()
        return entry

    def cancel(self, entry: list) -> None:
        with self._lock:
            if entry[2] is None:
                return
            entry[2] = None
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):  # cancelled ones leave in a batch
                self._heap = [e for e in self._heap if e[2] is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if not self._heap:
                    self._lock.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
                callback, entry[2] = entry[2], None
            try:
                callback()
            except Exception:  # a deadline's callback only shuts a socket; nothing to tell
                pass


WATCHDOG = Watchdog()


def proxy_for(scheme: str, host: str) -> str | None:
    """The proxy of $http_proxy / $https_proxy for ``host``, unless $no_proxy
    names it: urllib's rules, read from the few variables that matter
    (urllib walks the whole environment twice per request)."""
    if not sys.platform.startswith("linux"):  # other systems may keep proxies outside the environment
        proxy = urllib.request.getproxies().get(scheme)
        return proxy if proxy and not urllib.request.proxy_bypass(host) else None
    env = os.environ

    def variable(name: str, upper_ok: bool = True) -> str | None:
        lower = env.get(name + "_proxy")
        if lower is not None:  # the lower-case name wins, and an empty one means none
            return lower or None
        return (env.get(name.upper() + "_PROXY") or None) if upper_ok else None

    proxy = variable(scheme, upper_ok=not (scheme == "http" and "REQUEST_METHOD" in env))
    if not proxy:
        return None
    no = variable("no")
    if no and urllib.request.proxy_bypass_environment(host, {"no": no}):
        return None
    return proxy


def origin(url: str) -> tuple[str, str, int | None]:
    parsed = urllib.parse.urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, (parsed.hostname or "").lower(), port


class Exchange:
    """One request and its reply. Use as a context manager; read the body
    with ``read()`` or ``chunks()``. ``status`` and ``headers`` (lower-case
    names) are set once the reply's headers arrived."""

    def __init__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: dict | None = None, timeout: float = 600.0):
        self.url = url
        self.method = method
        self.body = body
        self.request_headers = dict(headers or {})
        self.deadline = Deadline(timeout)
        self.timeout = timeout
        self.status = 0
        self.headers: dict[str, str] = {}
        self.expired = False
        self._conn: http.client.HTTPConnection | None = None
        # http.client drops conn.sock once a reply says "Connection: close"
        # (its body still reads from the socket): keep our own reference
        self._sock: socket.socket | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._lock = threading.Lock()
        self._watchdog: list | None = None

    # -- the watchdog ----------------------------------------------------------
    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock or (self._conn.sock if self._conn is not None else None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _failure(self, exc: BaseException) -> Failure:
        if self.expired or (isinstance(exc, TimeoutError) and self.deadline.left <= 0):
            return Failure(self.url, "timeout", f"no complete reply within {self.timeout:g} s")
        if isinstance(exc, TimeoutError):
            return Failure(self.url, "timeout", f"no reply within {self.timeout:g} s")
        return Failure(self.url, _kind(exc), _reason(exc))

    # -- open --------------------------------------------------------------------
    def __enter__(self) -> "Exchange":
        self._watchdog = WATCHDOG.add(max(self.timeout, 0.0), self._expire)
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._watchdog is not None:
            WATCHDOG.cancel(self._watchdog)
        with self._lock:
            conn, self._conn = self._conn, None
            sock, self._sock = self._sock, None
            resp, self._resp = self._resp, None
        if resp is not None:
            try:
                resp.close()
            except (OSError, http.client.HTTPException):
                pass
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        if conn is not None:
            try:
                conn.close()
            except (OSError, http.client.HTTPException):
                pass

    def _connect(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        """A connection for ``url`` and the request target to send on it,
        through the proxy of $http_proxy / $https_proxy unless $no_proxy
        names the host (as urllib does)."""
        scheme, host, port = origin(url)
        parsed = urllib.parse.urlsplit(url)
        target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        left = max(self.deadline.left, 0.001)
        proxy = proxy_for(scheme, host)
        if proxy:
            via = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
            headers = {}
            if via.username is not None:
                token = base64.b64encode(f"{urllib.parse.unquote(via.username)}:"
                                         f"{urllib.parse.unquote(via.password or '')}".encode()).decode()
                headers["Proxy-Authorization"] = f"Basic {token}"
            if scheme == "https":
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(via.hostname, via.port or 80,
                                                                               timeout=left)
                conn.set_tunnel(host, port, headers=headers)
            else:
                conn = http.client.HTTPConnection(via.hostname, via.port or 80, timeout=left)
                target = f"http://{f'[{host}]' if ':' in host else host}:{port}{target}"
                self.request_headers.update(headers)
        else:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = cls(host, port, timeout=left)
        with self._lock:
            if self.expired:
                raise TimeoutError
            self._conn = conn
        return conn, target

    def _open(self) -> None:
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                conn, target = self._connect(url)
                conn.request(self.method, target, body=self.body, headers=self.request_headers)
                with self._lock:
                    self._sock = conn.sock
                    if self.expired and self._sock is not None:
                        self._sock.shutdown(socket.SHUT_RDWR)  # the watchdog came while connecting
                if self._sock is not None:
                    self._sock.settimeout(max(self.deadline.left, 0.001))
                resp = conn.getresponse()
            except Failure:
                raise
            except (OSError, http.client.HTTPException, ValueError, UnicodeError) as exc:
                raise self._failure(exc) from None
            self.status = resp.status
            self.headers = {k.lower(): v for k, v in resp.getheaders()}
            location = self.headers.get("location")
            if resp.status not in _REDIRECTS or not location:
                self._resp = resp
                return
            try:
                target = urllib.parse.urljoin(url, location.strip())
                same = origin(target) == origin(url)
            except ValueError:
                raise Failure(self.url, "redirect", f"HTTP {resp.status} redirect to an invalid "
                                                    f"location {location[:100]!r}") from None
            if not same:
                raise Failure(self.url, "redirect",
                              f"HTTP {resp.status} redirect to {_shown(target)} refused: azclaw follows redirects "
                              "only on the same host, so the API key is never sent elsewhere; "
                              "use that URL as the endpoint if you trust it")
            resp.close()
            self.close_connection_only()
            url = target
        raise Failure(self.url, "redirect", f"more than {MAX_REDIRECTS} redirects")

    def close_connection_only(self) -> None:
        with self._lock:
            conn, self._conn, self._sock = self._conn, None, None
        if conn is not None:
            conn.close()

    # -- read --------------------------------------------------------------------
    def chunks(self, stall: float | None = None) -> Iterator[bytes]:
        """The body as it arrives. With ``stall``, a body that goes silent
        that long after its first bytes ends with a ``stall`` Failure."""
        resp = self._resp
        if resp is None:
            return
        started = False
        while True:
            left = self.deadline.left
            if left <= 0:
                raise Failure(self.url, "timeout", f"no complete reply within {self.timeout:g} s")
            wait = min(left, stall) if (stall and started) else left
            try:
                if self._sock is not None:
                    self._sock.settimeout(max(wait, 0.001))
                data = resp.read1(_READ)
            except TimeoutError as exc:
                if stall and started and self.deadline.left > 0:
                    raise Failure(self.url, "stall", f"the reply stopped for {stall:g} s (a hung request)") from None
                raise self._failure(exc) from None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise self._failure(exc) from None
            if not data:
                if self.expired:
                    raise Failure(self.url, "timeout", f"no complete reply within {self.timeout:g} s")
                return
            started = True
            yield data

    def read(self, limit: int = MAX_REPLY_BYTES) -> bytes:
        """The whole body; a ``too_big`` Failure past ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        for data in self.chunks():
            size += len(data)
            if size > limit:
                raise Failure(self.url, "too_big", f"reply larger than {limit // 1024} KB; not read")
            parts.append(data)
        return b"".join(parts)

    def read_some(self, limit: int = MAX_ERROR_BYTES) -> bytes:
        """Up to ``limit`` bytes of the body, the rest ignored (error replies)."""
        parts: list[bytes] = []
        size = 0
        try:
            for data in self.chunks():
                parts.append(data)
                size += len(data)
                if size >= limit:
                    break
        except Failure:
            pass
        return b"".join(parts)[:limit]


def _shown(url: str) -> str:
    """A URL for a message: without user info, cut to a sane length."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    netloc = host + (f":{parsed.port}" if parsed.port else "")
    text = urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))
    return text if len(text) <= 200 else text[:200] + "..."


def decode_text(raw: bytes) -> str:
    """Bytes from a server as text; what is not UTF-8 is replaced."""
    return raw.decode("utf-8", "replace")


def parse_json(raw: bytes | str) -> object:
    """JSON from a server; raises ValueError for anything unusable (not JSON,
    nested too deep, out-of-range numbers)."""
    text = decode_text(raw) if isinstance(raw, bytes) else raw
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def retry_after(headers: dict) -> float | None:
    value = headers.get("retry-after") if headers else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass
class HttpReply:
    """One plain HTTP answer, for probing what a server is (``azclaw doctor``)."""

    url: str
    status: int
    headers: dict = field(default_factory=dict)
    data: object = None  # the JSON body; None when it was not JSON
    text: str = ""  # the start of the body

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def fetch_json(url: str, payload: dict | None = None, timeout: float = 10.0,
               api_key: str | None = None) -> HttpReply:
    """One GET (or POST of ``payload``), no retries. HTTP errors come back as
    replies; EndpointError is raised only when nothing usable answered (its
    ``kind`` is the transport's: ``down``, ``timeout``, ...)."""
    from ..errors import EndpointError

    headers = {"Accept": "application/json", "User-Agent": "azclaw"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = None
    if payload is not None:
        body = json.dumps(payload).encode("utf-8")
        headers["Content-Type"] = "application/json"
    try:
        with Exchange(url, "POST" if body is not None else "GET", body, headers, timeout) as ex:
            raw = ex.read() if 200 <= ex.status < 300 else ex.read_some()
            status, reply_headers = ex.status, dict(ex.headers)
    except Failure as exc:
        error = EndpointError(str(exc))
        error.kind = exc.kind  # down, timeout, ...: doctor tells a busy server from a missing one
        raise error from None
    try:
        data = parse_json(raw)
    except ValueError:
        data = None
    return HttpReply(url, status, reply_headers, data, decode_text(raw[:2000]))
