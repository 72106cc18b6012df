"""The only module that talks HTTP: a stdlib client for any OpenAI-compatible
``/v1/chat/completions`` endpoint (llama.cpp, vLLM, Ollama, LM Studio,
OpenRouter).

It retries what a busy or restarting server does (connection errors,
timeouts, HTTP 429 and 5xx) with exponential backoff and jitter, honours
``Retry-After``, and fails over to the next endpoint when one is down.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from .errors import ConfigError, EndpointError
from .textcalls import parse_text_calls, strip_thinking

API_KEY_ENV = "AZCLAW_API_KEY"
# Local models on CPUs can take minutes for one long reply; a short default
# would turn slow-but-working servers into failures.
DEFAULT_TIMEOUT = 600.0
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class ToolCall:
    """One call the model asked for. ``arguments`` is None when the model's
    arguments were not a JSON object; ``error`` then says why."""

    id: str
    name: str
    arguments: dict | None
    raw_arguments: str = ""
    error: str = ""


@dataclass
class Usage:
    """Token counts as the server reported them (0 when it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Completion:
    """What one chat-completions call returned, reasoning stripped."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = ""
    seconds: float = 0.0
    endpoint: str = ""
    text_calls: bool = False  # the calls were parsed out of the text


def normalize_endpoint(url: str) -> str:
    """Accept ``http://host:port``, ``…/v1`` or the full chat URL."""
    try:
        parsed = urllib.parse.urlparse(url.strip())
        parsed.port  # a port that is not a number raises here, not in the first request
    except ValueError as exc:
        raise ConfigError(f"endpoint {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"endpoint {url!r}: expected an http:// or https:// URL")
    path = parsed.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = path + ("/chat/completions" if path.endswith("/v1") else "/v1/chat/completions")
    return urllib.parse.urlunparse(parsed._replace(path=path))


def base_url(endpoint: str) -> str:
    """The server root of a chat endpoint (``…/v1/chat/completions`` removed)."""
    for suffix in ("/v1/chat/completions", "/chat/completions"):
        if endpoint.endswith(suffix):
            return endpoint[: -len(suffix)]
    return endpoint.rstrip("/")


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
    replies; EndpointError is raised only when nothing answered."""
    headers = {"Accept": "application/json", "User-Agent": "azclaw"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = None
    if payload is not None:
        body = json.dumps(payload).encode("utf-8")
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, reply_headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, reply_headers, raw = exc.code, dict(exc.headers or {}), exc.read()
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
        raise EndpointError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    text = raw[:2000].decode("utf-8", "replace")
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    return HttpReply(url, status, reply_headers, data, text)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _parse_arguments(raw: object) -> tuple[dict | None, str, str]:
    """Arguments arrive as a JSON string (OpenAI, llama.cpp, vLLM) or an
    object (Ollama, text calls); return (dict or None, raw text, error)."""
    if isinstance(raw, dict):
        return raw, json.dumps(raw, ensure_ascii=False), ""
    if raw is None or raw == "":
        return {}, "", ""
    if not isinstance(raw, str):
        return None, json.dumps(raw), f"arguments must be a JSON object, got {type(raw).__name__}"
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return None, raw, f"arguments are not valid JSON ({exc.msg} at char {exc.pos})"
    if not isinstance(value, dict):
        return None, raw, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, raw, ""


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def parse_completion(data: dict, endpoint: str = "") -> Completion:
    """Turn a chat-completions response body into a Completion."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise EndpointError(f"{endpoint}: response has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    text = strip_thinking(_content_text(message.get("content")))
    calls: list[ToolCall] = []
    raw_calls = message.get("tool_calls") if isinstance(message.get("tool_calls"), list) else []
    for n, raw in enumerate(raw_calls):
        raw = raw if isinstance(raw, dict) else {}
        fn = raw.get("function") if isinstance(raw.get("function"), dict) else {}
        args, raw_args, error = _parse_arguments(fn.get("arguments"))
        calls.append(ToolCall(id=str(raw.get("id") or f"call_{n}"), name=str(fn.get("name") or ""),
                              arguments=args, raw_arguments=raw_args, error=error))
    from_text = False
    if not calls:
        found, rest = parse_text_calls(text)
        if found:
            from_text = True
            text = rest
            for n, tc in enumerate(found):
                args, raw_args, error = _parse_arguments(tc.arguments)
                calls.append(ToolCall(id=f"call_text_{n}", name=tc.name, arguments=args,
                                      raw_arguments=raw_args, error=error))
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Completion(
        text=text,
        tool_calls=calls,
        usage=Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))),
        finish_reason=str(choice.get("finish_reason") or ""),
        endpoint=endpoint,
        text_calls=from_text,
    )


class LLMClient:
    """A chat-completions client for one agent: one or more endpoints, tried
    in order, the last one that worked first."""

    def __init__(self, endpoints: str | list[str], model: str = "default", api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = 4, backoff: float = 1.0,
                 max_backoff: float = 60.0):
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls:
            raise ConfigError("endpoint: at least one URL is needed")
        self.endpoints = [normalize_endpoint(u) for u in urls]
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"retries: expected a whole number >= 0, got {retries!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"timeout: expected seconds > 0, got {timeout!r}")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._preferred = 0

    # -- HTTP ---------------------------------------------------------------
    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "azclaw"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _request(self, url: str, body: bytes | None, timeout: float) -> dict:
        req = urllib.request.Request(url, data=body, headers=self._headers(),
                                     method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = " ".join(exc.read()[:300].decode("utf-8", "replace").split())
            message = f"{url}: HTTP {exc.code} {detail}".strip()
            if exc.code in _RETRY_STATUS:
                raise _Retryable(message, _retry_after(exc.headers)) from None
            raise EndpointError(message) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"{url}: {reason}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise _Retryable(f"{url}: response is not JSON: {raw[:120]!r}") from None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        base = min(self.backoff * (2 ** attempt), self.max_backoff)
        return base / 2 + random.uniform(0, base / 2)

    def _order(self) -> list[int]:
        n = len(self.endpoints)
        return [(self._preferred + i) % n for i in range(n)]

    # -- API ----------------------------------------------------------------
    def chat(self, messages: list[dict], tools: list[dict] | None = None,
             max_tokens: int | None = None, temperature: float | None = None) -> Completion:
        """Send one chat request; retry and fail over; raise EndpointError
        when every endpoint failed every attempt."""
        payload: dict = {"model": self.model, "messages": messages}
        if tools:
            payload["tools"] = tools
            payload["tool_choice"] = "auto"
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if temperature is not None:
            payload["temperature"] = temperature
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        errors: list[str] = []
        for attempt in range(self.retries + 1):
            retry_after = None
            for index in self._order():
                url = self.endpoints[index]
                start = time.monotonic()
                try:
                    data = self._request(url, body, self.timeout)
                except _Retryable as exc:
                    errors.append(str(exc))
                    if exc.retry_after is not None:
                        retry_after = max(retry_after or 0.0, exc.retry_after)
                    continue
                completion = parse_completion(data, url)
                completion.seconds = time.monotonic() - start
                self._preferred = index
                return completion
            if attempt < self.retries:
                time.sleep(self._delay(attempt, retry_after))
        raise EndpointError(f"{errors[-1]} (gave up after {self.retries + 1} attempts"
                            f" on {len(self.endpoints)} endpoint(s))")

    def health_check(self, wait: float = 0.0) -> str:
        """Check that at least one endpoint answers ``/health`` or
        ``/v1/models``; return the URL that answered. ``wait`` seconds are
        spent retrying a server that is still starting."""
        deadline = time.monotonic() + wait
        while True:
            problems: list[str] = []
            for url in self.endpoints:
                root = base_url(url)
                for route in ("/health", "/v1/models"):
                    try:
                        self._request(root + route, None, timeout=min(self.timeout, 10.0))
                        return root + route
                    except (_Retryable, EndpointError) as exc:
                        problems.append(str(exc))
            if time.monotonic() >= deadline:
                raise EndpointError(f"endpoint {self.endpoints[0]} is not reachable: {problems[0]}"
                                    if len(self.endpoints) == 1 else
                                    "no endpoint is reachable: " + "; ".join(problems[::2]))
            time.sleep(0.5)
