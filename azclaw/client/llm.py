"""The LLM client: chat requests to any OpenAI-compatible
``/v1/chat/completions`` endpoint (llama.cpp, vLLM, Ollama, LM Studio,
OpenRouter). The HTTP itself is in ``transport`` (one exchange, bounded in
time and size), streamed replies in ``sse``, reply parsing in ``completion``.

What it does about servers as they are:

* replies stream (``"stream": true``) when the endpoint supports it; an
  endpoint that refuses (an HTTP 4xx that names "stream"), or answers with a
  plain body, gets plain requests from then on;
* with a ``ServerPool`` (``pool.py``) every attempt goes where the pool
  says: the agent's home server while it is up, a stand-in while it is
  down; each request holds one of its server's slots;
* outages are waited out in time: connection errors, timeouts, a stalled
  stream, HTTP 408/409/425/429/5xx are retried with backoff (honouring
  ``Retry-After``) until the endpoints have been down for ``max_outage``
  seconds (counted from when they went down, so the next request after a
  long outage tries once, not for another ``max_outage``);
  malformed replies are retried a few times; one log line when an endpoint
  goes down, one per retry, one when it is back;
* an HTTP 400 that says the request does not fit the context raises
  ``ContextOverflow`` with the server's limit; ``context_size()`` asks the
  server for its context;
* a server that does not know the model ``default`` but serves one model
  gets that model's name; ``check_model()``, before a run, refuses a model
  name that a server listing its models does not serve.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext

from .completion import (MAX_SCAN, Completion, ToolCall, Usage, context_overflow, error_message,
                         parse_completion)
from ..errors import ConfigError, ContextOverflow, EndpointError
from .endpoint import Endpoint
from .pool import Pool, ServerPool
from .probe import PROBE_TIMEOUT, context_size as probe_context_size, model_entries, served_models, unserved
from .sse import Assembler, Progress, StreamError, assemble
from .transport import (MAX_REPLY_BYTES, Exchange, Failure, HttpReply, decode_text, fetch_json, parse_json,
                        retry_after)

__all__ = ["API_KEY_ENV", "Completion", "ContextOverflow", "DEFAULT_MAX_OUTAGE", "DEFAULT_STALL_TIMEOUT",
           "DEFAULT_TIMEOUT", "Endpoint", "HttpReply", "LLMClient", "MAX_REPLY_BYTES", "Outages", "Pool", "Progress",
           "ServerPool", "ToolCall", "Usage", "fetch_json", "normalize_endpoint", "parse_completion"]

log = logging.getLogger("azclaw")

API_KEY_ENV = "AZCLAW_API_KEY"
# Local models on CPUs can take minutes for one long reply; a short default
# would turn slow-but-working servers into failures. It bounds the whole
# request: connect, prompt evaluation, every byte of the reply.
DEFAULT_TIMEOUT = 600.0
DEFAULT_STALL_TIMEOUT = 120.0  # a stream silent this long after it started is hung
DEFAULT_MAX_OUTAGE = 1800.0  # seconds an endpoint may keep failing before a request gives up
LOADING_WAIT = 300.0  # seconds health_check waits for a server answering 503 while it loads
BAD_REPLY_RETRIES = 4  # malformed replies are not an outage: retried this many times
ESTIMATE_CHARS_PER_TOKEN = 4  # for a prompt whose server streamed no token counts
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_NO_STREAM_STATUS = {400, 404, 405, 406, 415, 422, 501}


def normalize_endpoint(url: str) -> str:
    """The chat URL of ``url`` (see ``Endpoint.parse``)."""
    return Endpoint.parse(url).chat


class _Retry(Exception):
    """A failed attempt worth another. ``outage``: the endpoint is down (as
    opposed to a malformed reply)."""

    def __init__(self, message: str, outage: bool, retry_after: float | None = None, kind: str = ""):
        super().__init__(message)
        self.outage = outage
        self.retry_after = retry_after
        self.kind = kind  # the transport's failure (down, timeout, stall, ...), or empty


class _HttpError(Exception):
    def __init__(self, url: str, status: int, raw: bytes, headers: dict):
        self.url, self.status, self.headers = url, status, headers
        self.text = decode_text(raw)
        try:
            self.body = parse_json(raw)
        except ValueError:
            self.body = None
        self.message = error_message(self.body, self.text)
        super().__init__(f"{url}: HTTP {status} {self.message}".strip())


class Outages:
    """Which endpoints are down and since when, and what was said once: one
    value shared by the clients of a run (each client has its own when none
    is given), so agents on one server wait out one outage together."""

    def __init__(self):
        self._lock = threading.Lock()
        self._down: dict[str, float] = {}  # endpoint -> when it started failing
        self._said: set[tuple[str, str]] = set()

    def mark_down(self, url: str, reason: str) -> None:
        with self._lock:
            if url in self._down:
                return
            self._down[url] = time.monotonic()
        log.warning("endpoint %s is down: %s", url, reason)

    def mark_up(self, url: str) -> None:
        with self._lock:
            since = self._down.pop(url, None)
        if since is not None:
            log.info("endpoint %s is back after %.0f s", url, time.monotonic() - since)

    def since(self, urls: list[str], now: float) -> float:
        """Since when every one of ``urls`` has been down (``now`` if one is not)."""
        with self._lock:
            return max(self._down.get(url, now) for url in urls)

    def is_down(self, url: str) -> bool:
        with self._lock:
            return url in self._down

    def say_once(self, key: tuple[str, str], message: str, *args) -> None:
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        log.info(message, *args)


def _why(message: str, url: str) -> str:
    return message[len(url) + 2:] if message.startswith(url + ": ") else message


def check_limits(*, timeout: float, stall_timeout: float, max_outage: float, retries: int | None) -> None:
    """Raise ConfigError naming the first limit that is not a usable number."""
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
        raise ConfigError(f"retries: expected a whole number >= 0, got {retries!r}")
    for name, value, low in (("timeout", timeout, 0), ("stall_timeout", stall_timeout, 0),
                             ("max_outage", max_outage, -1)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > low \
                or value != value or value == float("inf"):
            raise ConfigError(f"{name}: expected seconds {'> 0' if low == 0 else '>= 0'}, got {value!r}")


class LLMClient:
    """A chat-completions client for one agent: one or more endpoints, tried
    in order, the last one that worked first; or, with ``pool`` (a
    ``ServerPool`` shared by a run's clients) and ``key`` (the agent's
    routing key), the server the pool picks for the agent.

    ``timeout`` bounds one request as a whole (connect and every read);
    ``stall_timeout`` ends a streamed reply that stops arriving. A failing
    request is retried until its endpoints have failed for ``max_outage``
    seconds; ``retries``, when set, also caps the attempts (``retries=0``:
    one attempt). ``cancel``, a ``threading.Event``, ends a wait between
    retries when set (the request then raises EndpointError).
    """

    def __init__(self, endpoints: str | list[str], model: str = "default", api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, retries: int | None = None, backoff: float = 1.0,
                 max_backoff: float = 60.0, *, max_outage: float = DEFAULT_MAX_OUTAGE,
                 stall_timeout: float = DEFAULT_STALL_TIMEOUT, stream: bool = True,
                 cancel: threading.Event | None = None, outages: Outages | None = None,
                 headers: dict[str, str] | None = None, pool: ServerPool | None = None, key: str = ""):
        if isinstance(endpoints, Pool):
            endpoints = list(endpoints.endpoints)
        urls = [endpoints] if isinstance(endpoints, (str, Endpoint)) else list(endpoints)
        if not urls and pool is None:
            raise ConfigError("endpoint: at least one URL is needed")
        self._set_endpoints([Endpoint.parse(u) for u in urls])
        check_limits(timeout=timeout, stall_timeout=stall_timeout, max_outage=max_outage, retries=retries)
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_outage = max_outage
        self.stall_timeout = stall_timeout
        self.stream = stream
        self.cancel = cancel
        self.outages = outages if outages is not None else Outages()
        self.headers = dict(headers or {})  # sent with every request (a router's key, a gateway's own)
        self._preferred = 0
        self._no_stream: set[str] = set()  # endpoints that do not stream
        self._model_for: dict[str, str] = {}  # the model name an endpoint was found to serve
        self._context: dict[str, int | None] = {}  # endpoint -> context size in tokens (None: unknown)
        self.pool: ServerPool | None = None
        self.key = key
        if pool is not None:
            self.use_pool(pool, key)

    def _set_endpoints(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints
        self._roots = {e.chat: e.root for e in endpoints}
        self._index = {e.chat: i for i, e in enumerate(endpoints)}

    def use_pool(self, pool: ServerPool, key: str) -> None:
        """Send every request where ``pool`` puts the agent of routing key ``key``."""
        self.pool, self.key = pool, key
        self._set_endpoints(list(pool.endpoints))
        self._context = pool.contexts  # one probe per server, not one per agent

    # -- one request -----------------------------------------------------------------
    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "azclaw",
                   **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _exchange(self, url: str, payload: dict, model: str, stream: bool,
                  on_delta: Callable[[Progress], None] | None) -> Completion:
        body = dict(payload, model=model)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        data = json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")
        start = time.monotonic()
        try:
            with Exchange(url, "POST", data, self._headers(), self.timeout) as ex:
                if not 200 <= ex.status < 300:
                    raise _HttpError(url, ex.status, ex.read_some(), ex.headers)
                if "text/event-stream" in ex.headers.get("content-type", "").lower():
                    completion = self._read_stream(url, ex.chunks(stall=self.stall_timeout), on_delta)
                else:
                    completion = self._read_body(url, ex.read(), on_delta)
                if completion.usage.estimated:
                    completion.usage.prompt_tokens = len(data) // ESTIMATE_CHARS_PER_TOKEN
        except Failure as exc:
            if exc.kind in ("redirect", "too_big"):
                raise EndpointError(str(exc)) from None
            raise _Retry(str(exc), outage=exc.kind in ("down", "timeout", "stall"), kind=exc.kind) from None
        completion.seconds = time.monotonic() - start
        completion.model = model
        return completion

    def _read_body(self, url: str, raw: bytes, on_delta) -> Completion:
        try:
            data = parse_json(raw)
        except ValueError:
            if raw.lstrip().startswith(b"data:"):  # a stream sent without its content type
                return self._read_stream(url, [raw], on_delta)
            raise _Retry(f"{url}: response is not JSON: {raw[:120]!r}", outage=False) from None
        return self._parse(url, data)

    def _read_stream(self, url: str, chunks, on_delta) -> Completion:
        assembler = Assembler(_guarded(on_delta), endpoint=url)
        cut_off = ""
        try:
            assemble(chunks, assembler)
        except StreamError as exc:
            if exc.body is None:
                raise _Retry(f"{url}: {exc}", outage=False) from None
            try:
                raw = json.dumps(exc.body)
            except (ValueError, RecursionError):
                raw = ""
            overflow = context_overflow(url, 400, exc.body, raw)
            if overflow is not None:
                self._learn(url, overflow)
                raise overflow from None
            raise _Retry(f"{url}: error in the stream: {error_message(exc.body, raw)}", outage=False) from None
        except Failure as exc:
            if exc.kind != "timeout" or not assembler.received:
                raise
            cut_off = "timeout"  # the reply was coming in: keep what arrived
        if not cut_off and not assembler.done and not assembler.finish_reason and not assembler.cut_off:
            raise _Retry(f"{url}: the stream ended before the reply did", outage=False)
        completion = self._parse(url, assembler.body())
        completion.streamed = True
        if assembler.usage is None and assembler.timings is None:
            completion.usage = Usage(0, assembler.progress.tokens, 0, estimated=True)
        completion.cut_off = assembler.cut_off or cut_off or completion.cut_off
        return completion

    def _parse(self, url: str, data: object) -> Completion:
        try:
            return parse_completion(data, url)
        except EndpointError as exc:
            raise _Retry(str(exc), outage=False) from None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, OverflowError) as exc:
            raise _Retry(f"{url}: unusable reply ({type(exc).__name__}: {str(exc)[:100]})", outage=False) from None

    def _one(self, url: str, payload: dict, stream: bool, on_delta, depth: int = 0) -> Completion:
        """One attempt on one endpoint (a second request when the endpoint
        refuses streaming or the model name)."""
        model = self._model_for.get(url, self.model)
        stream = stream and url not in self._no_stream
        try:
            completion = self._exchange(url, payload, model, stream, on_delta)
        except _HttpError as err:
            overflow = context_overflow(url, err.status, err.body, err.text)
            if overflow is not None:
                self._learn(url, overflow)
                raise overflow from None
            if err.status in _RETRY_STATUS:
                raise _Retry(str(err), outage=True, retry_after=retry_after(err.headers)) from None
            if depth < 2 and err.status == 404 and model == "default" and "model" in err.message.lower() \
                    and self._pick_model(url, err):
                return self._one(url, payload, stream, on_delta, depth + 1)
            if depth < 2 and stream and err.status in _NO_STREAM_STATUS and "stream" in err.text[:MAX_SCAN].lower():
                completion = self._one(url, payload, False, on_delta, depth + 1)
                self._no_stream.add(url)
                log.info("%s refused a streamed request (HTTP %d: %s); it gets plain requests from now on",
                         url, err.status, err.message[:120])
                return completion
            raise EndpointError(str(err)) from None
        if stream and not completion.streamed:
            self._no_stream.add(url)  # asked to stream, it answered plain: don't ask again
        return completion

    def _pick_model(self, url: str, err: _HttpError) -> bool:
        """The server does not know ``default``: take the one model it lists."""
        models = served_models(self._roots[url], self.api_key, timeout=min(self.timeout, PROBE_TIMEOUT))
        if not models:
            return False
        if len(models) > 1:
            shown = ", ".join(models[:20]) + (f" (and {len(models) - 20} more)" if len(models) > 20 else "")
            raise EndpointError(f"{err}; the server serves {len(models)} models, name one "
                                f"(--model, or the agent's model): {shown}") from None
        self._model_for[url] = models[0]
        self.outages.say_once((url, models[0]), "%s does not know the model 'default'; using the one it serves: %s",
                              self._roots[url], models[0])
        return True

    def _learn(self, url: str, overflow: ContextOverflow) -> None:
        if overflow.limit:
            self._context[url] = overflow.limit

    # -- retries ---------------------------------------------------------------------------
    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        base = min(self.backoff * (2 ** min(attempt, 30)), self.max_backoff)
        return base / 2 + random.uniform(0, base / 2)

    def _targets(self) -> Iterator[str]:
        """The endpoints of one round of attempts: the fail-over list from the
        last one that worked, or what the pool picks, asked anew after each
        failure (the pool then knows the server is down)."""
        if self.pool is None:
            n = len(self.endpoints)
            for i in range(n):
                yield self.endpoints[(self._preferred + i) % n].chat
            return
        tried: set[str] = set()
        while True:
            url = self.pool.pick(self.key, tried)
            if url is None:
                return
            tried.add(url)
            yield url

    def _slot(self, url: str):
        return self.pool.slot(url, self.cancel) if self.pool is not None else nullcontext()

    def _wait(self, seconds: float) -> bool:
        """Sleep; False when ``cancel`` was set."""
        if self.cancel is None:
            time.sleep(seconds)
            return True
        return not self.cancel.wait(seconds)

    # -- API ---------------------------------------------------------------------------------
    def chat(self, messages: list[dict], tools: list[dict] | None = None,
             max_tokens: int | None = None, temperature: float | None = None, *,
             response_format: dict | None = None, tool_choice: str | dict | None = None,
             on_delta: Callable[[Progress], None] | None = None, stream: bool | None = None) -> Completion:
        """Send one chat request; retry and fail over; raise EndpointError
        when the endpoints failed longer than the outage budget (or
        ``retries`` times), ContextOverflow at once when the request does not
        fit the server's context.

        ``response_format`` (e.g. ``{"type": "json_schema", ...}``) and
        ``tool_choice`` (default ``"auto"`` with tools) are passed through.
        ``on_delta(progress)`` is called as a streamed reply arrives (at most
        ten times a second). ``stream=False`` asks for a plain reply."""
        payload: dict = {"messages": messages}
        if tools:
            payload["tools"] = tools
            payload["tool_choice"] = tool_choice if tool_choice is not None else "auto"
        if response_format is not None:
            payload["response_format"] = response_format
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if temperature is not None:
            payload["temperature"] = temperature
        want_stream = self.stream if stream is None else stream
        errors: list[_Retry] = []
        rounds = requests = bad = 0
        first_failure: float | None = None
        while True:
            wait_hint = None
            for url in self._targets():
                requests += 1
                try:
                    with self._slot(url):
                        completion = self._one(url, payload, want_stream, on_delta)
                except _Retry as exc:
                    errors.append(exc)
                    if exc.outage:
                        self.outages.mark_down(url, _why(str(exc), url))
                        if self.pool is not None:
                            self.pool.note_down(url)
                    else:
                        bad += 1
                    if exc.retry_after is not None:
                        wait_hint = max(wait_hint or 0.0, exc.retry_after)
                    continue
                self.outages.mark_up(url)
                self._preferred = self._index.get(url, 0)
                completion.attempts = requests
                return completion
            rounds += 1
            now = time.monotonic()
            if first_failure is None:
                # an outage that an earlier request already waited on counts from its start
                first_failure = min(now, self.outages.since([e.chat for e in self.endpoints], now))
            failing = now - first_failure
            left = self.max_outage - failing
            last = errors[-1]
            if (self.retries is not None and rounds > self.retries) or left <= 0 or \
                    (bad > BAD_REPLY_RETRIES and not last.outage):
                break
            delay = min(self._delay(rounds - 1, wait_hint), left)
            log.warning("%s; retry %d in %.1f s (failing for %.0f s, giving up after %.0f s)",
                        last, rounds, delay, failing, self.max_outage)
            if not self._wait(delay):
                raise EndpointError(f"{last} (stopped while waiting to retry)")
        spent = time.monotonic() - first_failure
        error = EndpointError(f"{errors[-1]} (gave up after {rounds} attempts, failing for {spent:.0f} s"
                              f" on {len(self.endpoints)} endpoint(s))")
        error.kind = errors[-1].kind  # a timeout: a busy server, not a missing one
        raise error

    def context_size(self) -> int | None:
        """The server's context in tokens (the smallest of the endpoints that
        tell), asked once per endpoint and kept; None when none tells. A
        ContextOverflow that named the limit updates it."""
        sizes = []
        for endpoint in self.endpoints:
            url = endpoint.chat
            if url not in self._context:
                found = probe_context_size(endpoint.root, self._model_for.get(url, self.model), self.api_key,
                                           timeout=min(self.timeout, PROBE_TIMEOUT))
                self._context[url] = found.tokens if found else None
                if found:
                    log.debug("%s: context of %d tokens (%s)", url, found.tokens, found.source)
            if self._context[url]:
                sizes.append(self._context[url])
        return min(sizes) if sizes else None

    def check_model(self) -> None:
        """Before a run: raise ConfigError, listing what is offered, when a
        server that lists its models does not serve ``model`` (see
        ``probe.unserved``: servers that list nothing, or serve their one
        model under any name, pass; ``default`` passes where one model is
        listed, and the first request takes its name)."""
        for endpoint in self.endpoints:
            root, url = endpoint.root, endpoint.chat
            model = self._model_for.get(url, self.model)
            offered = unserved(model, self._model_entries(root))
            if not offered:
                continue
            shown = ", ".join(offered[:20]) + (f" (and {len(offered) - 20} more)" if len(offered) > 20 else "")
            what = (f"{root} serves several models and none is named 'default'" if model == "default"
                    else f"{root} does not serve it")
            raise ConfigError(f"model {model!r}: {what}; it serves: {shown} "
                              "(name one with --model, or as the agent's model)")

    def _model_entries(self, root: str) -> list[dict] | None:
        """``/v1/models`` of ``root``, asked once per pool (the clients of a pool share it)."""
        if self.pool is None:
            return model_entries(root, self.api_key, timeout=min(self.timeout, PROBE_TIMEOUT))
        return self.pool.once(("models", root), lambda: model_entries(root, self.api_key,
                                                                       timeout=min(self.timeout, PROBE_TIMEOUT)))

    def health_check(self, wait: float = 0.0, loading_wait: float = LOADING_WAIT) -> str:
        """Check that at least one endpoint answers ``/health`` or
        ``/v1/models``; return the URL that answered. ``wait`` seconds are
        spent retrying a server that is not reachable yet; a server answering
        503 (loading its model) is waited for up to ``loading_wait`` seconds.
        On a pool the check is made once for all its clients, and the servers
        that do not answer start the run marked down."""
        if self.pool is not None:
            return self.pool.checked(lambda: self._health_check(wait, loading_wait))
        return self._health_check(wait, loading_wait)

    def _health_check(self, wait: float, loading_wait: float) -> str:
        start = time.monotonic()
        announced = False
        while True:
            problems: list[str] = []
            loading = ""
            for endpoint in self.endpoints:
                root = endpoint.root
                for route in ("/health", "/v1/models"):
                    try:
                        reply = fetch_json(root + route, timeout=min(self.timeout, PROBE_TIMEOUT),
                                           api_key=self.api_key)
                    except EndpointError as exc:
                        problems.append(str(exc))
                        continue
                    if reply.ok and (reply.data is not None or not reply.text.strip()):
                        if announced:
                            log.info("%s is ready", root)
                        return root + route
                    said = error_message(reply.data, reply.text)
                    problems.append(f"{root + route}: HTTP {reply.status} {said}".strip())
                    if reply.status == 503:
                        loading = loading or f"{root} (HTTP 503 {said})".strip()
            elapsed = time.monotonic() - start
            if loading and elapsed < loading_wait:
                if not announced:
                    log.warning("%s is not ready, loading its model?; waiting up to %.0f s", loading, loading_wait)
                    announced = True
                if not self._wait(min(0.5, loading_wait - elapsed)):
                    raise EndpointError(f"stopped while waiting for {loading}")
                continue
            if elapsed >= wait:
                if loading:
                    raise EndpointError(f"{loading} is still not ready after {elapsed:.0f} s")
                raise EndpointError(f"endpoint {self.endpoints[0].chat} is not reachable: {problems[0]}"
                                    if len(self.endpoints) == 1 else
                                    "no endpoint is reachable: " + "; ".join(problems[::2]))
            if not self._wait(0.5):
                raise EndpointError("stopped while waiting for the endpoint")


def _guarded(on_delta: Callable[[Progress], None] | None) -> Callable[[Progress], None] | None:
    """A progress callback that cannot break a request: its first error is
    logged and it is not called again."""
    if on_delta is None:
        return None
    broken = []

    def call(progress: Progress) -> None:
        if broken:
            return
        try:
            on_delta(progress)
        except Exception as exc:  # a console bug must not fail the request
            broken.append(exc)
            log.warning("progress callback failed, not called again: %s: %s", type(exc).__name__, exc)
    return call
