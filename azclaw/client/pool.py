"""A pool of servers that a team shares (``--endpoints``), and one run's use of it.

``Pool`` is a setting: the servers' URLs. An agent whose ``endpoint`` is a
Pool is spread over it; an agent with its own URL, or its own fail-over
list (tried in order), is not.

``ServerPool`` is one run's pool, shared by the clients of its agents:

1. Each agent gets a home server when the run starts, in team order: the
   server with the fewest agents so far (ties broken by a hash of the
   agent's routing key). The team is spread evenly, and the same team on
   the same pool gets the same homes in every run and every resume.
2. Every request of the agent goes to its home while the home is up, so the
   agent's long, stable prompt prefix stays in that server's cache.
3. When the home is down (a request to it was refused, timed out, or got
   HTTP 429/5xx), the agent goes to a stand-in: the up server with the
   fewest agents at that moment. It stays there while the stand-in is up.
4. A server that went down is asked every ``recheck`` seconds whether it is
   back (``/health``, or ``/v1/models`` where there is none); once it is,
   its agents return to it with their next request.
5. A server is sent no more requests at once than it has slots: llama.cpp
   tells ``total_slots`` in ``/props``; elsewhere ``per_server`` (None: no
   limit). A request waits for a slot on its own server rather than go to
   another, which would not hold its prefix.

Which servers are down is the run's ``Outages``, the value every client of
the run marks.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..errors import ConfigError, EndpointError
from .endpoint import Endpoint
from .probe import PROBE_TIMEOUT, answers, slots

log = logging.getLogger("azclaw")

RECHECK = 2.0  # seconds between asks of a server that is down
ROUTING_HEADER = "x-smg-routing-key"  # SGLang Model Gateway's sticky-session header (manual policy)
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def routing_key(run: str, agent: str) -> str:
    """The stable key of an agent's requests in a run, ``azclaw-<run>-<agent>``:
    the same on every request and after a resume, so a router that routes on
    it keeps the agent on the worker that holds its prompt prefix."""
    return f"azclaw-{_KEY_CHARS.sub('-', run).strip('-')[:80] or 'run'}-{agent}"


@dataclass(frozen=True)
class Pool:
    """The servers a team shares: ``Pool(["http://gpu1:8080", "http://gpu2:8080"])``
    (``http://host:port``, ``…/v1`` or the full chat URL, as for ``endpoint``)."""

    urls: tuple[str, ...]
    endpoints: tuple[Endpoint, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        urls = (self.urls,) if isinstance(self.urls, (str, Endpoint)) else tuple(self.urls)
        if not urls:
            raise ConfigError("endpoints: a pool needs at least one URL")
        endpoints = tuple(Endpoint.parse(u) for u in urls)
        chats = [e.chat for e in endpoints]
        twice = next((c for c in chats if chats.count(c) > 1), None)
        if twice:
            raise ConfigError(f"endpoints: {twice} is named twice")
        object.__setattr__(self, "urls", tuple(chats))
        object.__setattr__(self, "endpoints", endpoints)

    @classmethod
    def parse(cls, text: str, what: str = "--endpoints") -> "Pool":
        """A pool from ``URL,URL,...``."""
        urls = [u.strip() for u in text.split(",") if u.strip()]
        if not urls:
            raise ConfigError(f"{what}: expected URL,URL,... (at least one URL)")
        try:
            return cls(tuple(urls))
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc}") from None

    def __len__(self) -> int:
        return len(self.urls)


def _rank(key: str, url: str) -> bytes:
    """A stable order of the servers for one agent (the same in every process)."""
    return hashlib.blake2b(f"{key}\n{url}".encode("utf-8", "replace"), digest_size=8).digest()


class ServerPool:
    """One run's pool (see the module doc). ``pick(key)`` is the server for
    an agent's next attempt; ``slot(url)`` holds one of that server's slots
    while a request is in flight; ``note_down(url)`` is called when a
    request found it down; ``close()`` ends the checks of servers that are down."""

    def __init__(self, pool: Pool, outages, *, per_server: int | None = None, api_key: str | None = None,
                 recheck: float = RECHECK, probe_timeout: float = PROBE_TIMEOUT):
        self.pool = pool
        self.endpoints = list(pool.endpoints)
        self.outages = outages
        self.per_server = per_server
        self.api_key = api_key
        self.recheck = recheck
        self.probe_timeout = probe_timeout
        self.sent: Counter[str] = Counter()  # requests sent to each server
        self.contexts: dict[str, int | None] = {}  # what the servers said of their context (shared by the clients)
        self._by_url = {e.chat: e for e in self.endpoints}
        self._lock = threading.Lock()
        self._free = {url: threading.Condition(self._lock) for url in self._by_url}
        self._home: dict[str, str] = {}  # agent key -> its home server
        self._at: dict[str, str] = {}  # agent key -> where its requests go now
        self._busy: Counter[str] = Counter()  # requests in flight per server
        self._limit: dict[str, int | None] = {}  # slots per server, once asked
        self._asking = {url: threading.Lock() for url in self._by_url}
        self._closed = threading.Event()
        self._checker: threading.Thread | None = None
        self._once: dict = {}  # what the clients asked of the servers once (health, models)
        self._once_lock = threading.Lock()

    # -- where an agent's requests go ------------------------------------------------
    def assign(self, keys: list[str]) -> None:
        """Give each agent (by routing key, in team order) its home."""
        with self._lock:
            for key in keys:
                self._assign(key)

    def _assign(self, key: str) -> str:
        home = self._home.get(key)
        if home is None:
            count = Counter(self._home.values())
            home = min(self._by_url, key=lambda url: (count[url], _rank(key, url)))
            self._home[key] = home
        return home

    def home(self, key: str) -> Endpoint:
        with self._lock:
            return self._by_url[self._assign(key)]

    def where(self, key: str) -> str:
        """The server the agent's last request went to (its home before any)."""
        with self._lock:
            return self._at.get(key) or self._assign(key)

    def pick(self, key: str, avoid: set[str] | frozenset = frozenset()) -> str | None:
        """The server (chat URL) for the agent's next attempt, none of ``avoid``
        (the servers this attempt round already tried); None when every one was."""
        down = self.outages.is_down
        with self._lock:
            home = self._assign(key)
            now = self._at.get(key)
            if home not in avoid and not down(home):
                url = home
            elif now is not None and now != home and now not in avoid and not down(now):
                url = now  # the stand-in keeps the agent while it is up
            else:
                left = [u for u in self._by_url if u not in avoid]
                if not left:
                    return None
                up = [u for u in left if not down(u)]
                if not up and home in left:
                    url = home  # everything is down: knock at home first
                else:
                    load = Counter(self._at.get(k, h) for k, h in self._home.items() if k != key)
                    url = min(up or left, key=lambda u: (load[u], _rank(key, u)))
            if url != now and now is not None:
                log.debug("pool: %s moves from %s to %s", key, now, url)
            self._at[key] = url
            return url

    # -- slots ---------------------------------------------------------------------------
    @contextmanager
    def slot(self, url: str, cancel: threading.Event | None = None) -> Iterator[None]:
        """Hold one of ``url``'s slots for one request (waiting while all are taken)."""
        limit = self._slots(url)
        with self._lock:
            while limit and self._busy[url] >= limit:
                if self._closed.is_set() or (cancel is not None and cancel.is_set()):
                    raise EndpointError(f"{url}: stopped while waiting for a free slot ({limit} in use)")
                self._free[url].wait(0.5)
                limit = self._limit.get(url, limit)
            self._busy[url] += 1
            self.sent[url] += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy[url] -= 1
                self._free[url].notify()

    def _slots(self, url: str) -> int | None:
        if url in self._limit:
            return self._limit[url]
        with self._asking[url]:  # one ask per server; the others wait for its answer
            if url not in self._limit:
                told = slots(self._by_url[url].root, self.api_key, timeout=self.probe_timeout)
                if told:
                    log.debug("pool: %s has %d slots", url, told)
                with self._lock:
                    self._limit[url] = told or self.per_server
        return self._limit[url]

    # -- health -------------------------------------------------------------------------
    def note_down(self, url: str) -> None:
        """A request found ``url`` down (the client marked it in the outages):
        check it until it is back."""
        with self._lock:
            if self._closed.is_set():
                return
            if self._checker is None or not self._checker.is_alive():
                moved = sum(1 for k, h in self._home.items() if h == url)
                if moved and len(self._by_url) > 1:
                    log.info("pool: %d agent(s) of %s go to the other servers until it is back", moved, url)
                self._checker = threading.Thread(target=self._check, daemon=True, name="azclaw-pool-check")
                self._checker.start()

    def _check(self) -> None:
        while not self._closed.wait(self.recheck):
            for url, endpoint in self._by_url.items():
                if self.outages.is_down(url) and answers(endpoint.root, self.api_key,
                                                         timeout=min(self.probe_timeout, max(self.recheck, 1.0))):
                    with self._lock:
                        self._limit.pop(url, None)  # asked again: it may have restarted with other settings
                    self.outages.mark_up(url)
                    if any(h == url for h in self._home.values()):
                        log.info("pool: %s is back; its agents return to it", url)
            with self._lock:
                if not any(self.outages.is_down(url) for url in self._by_url):
                    self._checker = None
                    return

    def once(self, key, ask):
        """``ask()``'s answer for ``key``, asked once for every client of the pool."""
        with self._once_lock:
            if key not in self._once:
                self._once[key] = ask()
            return self._once[key]

    def checked(self, check) -> str:
        """The health check before a run, made once for the pool: ``check()``
        (which raises when no server answers), then every server asked once
        more; the ones that do not answer are marked down, so their agents
        start on stand-ins rather than wait on them."""
        def whole() -> str:
            answered = check()
            for url, endpoint in self._by_url.items():
                if not answers(endpoint.root, self.api_key, timeout=self.probe_timeout):
                    self.outages.mark_down(url, "it did not answer before round 1")
                    self.note_down(url)
            return answered
        return self.once("health", whole)

    def close(self) -> None:
        """End the checks of servers that are down; wake requests waiting for a slot."""
        self._closed.set()
        with self._lock:
            for free in self._free.values():
                free.notify_all()

    def placement(self) -> dict[str, str]:
        """Where each agent's requests go now (agent key -> server)."""
        with self._lock:
            return {key: self._at.get(key, home) for key, home in self._home.items()}
