"""One bundled model server per agent, so agents stop evicting each other's
prompt from the KV cache.

llama-cpp-python's server keeps one KV cache: with three agents taking turns,
each request finds the previous agent's prompt there and evaluates its own
again from the first token (99% of the prompt, measured). A server per agent
keeps each agent's system prompt evaluated; a warm turn evaluates only what
changed (the round's messages), about a quarter of the prompt. The model file
is mapped, not copied, so the servers share its pages; each adds its own KV
cache and Python (about 250 MB for SmolLM2 with a 4096-token context).

llama-cpp-python's own RAM cache (``--cache``) would keep the prefixes in one
process, but every entry also copies the logits buffer that ``cache_size``
does not count: the server grew by ~125 MB per turn (SmolLM2), without bound.

    with LocalTeamServer(["architect", "developer", "reviewer"]) as team:
        Agent("architect", endpoint=team.endpoint_for("architect"), ...)
"""

from __future__ import annotations

import time

from ..errors import LocalServerError
from .server import LocalServer

MAX_SERVERS = 4  # more agents than this share servers, in turn


class LocalTeamServer:
    """LocalServer's API for a team: ``endpoint_for(agent)`` names the
    agent's own server; ``endpoint`` is the first one (for a single client,
    ``azclaw doctor`` or ``serve``). Every keyword is LocalServer's; ``port``
    is the first server's (the others take free ports)."""

    def __init__(self, agents: list[str] | int = 3, max_servers: int = MAX_SERVERS, **server_args):
        names = [f"agent{n + 1}" for n in range(agents)] if isinstance(agents, int) else list(agents)
        if not names:
            raise LocalServerError("a local team server needs at least one agent")
        count = max(1, min(len(names), max_servers))
        port = server_args.pop("port", 0)
        self.servers = [LocalServer(port=port if n == 0 else 0, **server_args) for n in range(count)]
        self._assigned = {name: self.servers[n % count] for n, name in enumerate(dict.fromkeys(names))}

    # -- what agents need ---------------------------------------------------
    def server_for(self, agent: str) -> LocalServer:
        """The agent's server; an agent not named at the start gets the next one in turn."""
        if agent not in self._assigned:
            self._assigned[agent] = self.servers[len(self._assigned) % len(self.servers)]
        return self._assigned[agent]

    def endpoint_for(self, agent: str) -> str:
        return self.server_for(agent).endpoint

    @property
    def endpoint(self) -> str:
        return self.servers[0].endpoint

    @property
    def endpoints(self) -> dict[str, str]:
        return {name: server.endpoint for name, server in self._assigned.items()}

    def __getattr__(self, name):
        # model, chat_format, n_ctx, max_tokens, threads, context_budget, log_path, host, bundled:
        # the same for every server
        if name == "servers":
            raise AttributeError(name)
        return getattr(self.servers[0], name)

    def describe(self) -> str:
        count = len(self.servers)
        return self.servers[0].describe()[:-1] + (f", one server per agent: {count} servers)" if count > 1 else ")")

    @property
    def running(self) -> bool:
        return all(s.running for s in self.servers)

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self.servers if s.process is not None]

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "LocalTeamServer":
        """Start every server in turn (they share the first one's log file);
        stop those already started when one fails. The model file is found
        (or fetched, and its pin checked) once, before any of them starts."""
        self.prepare()
        try:
            for n, server in enumerate(self.servers):
                if n and server.log_path is None:
                    server.log_path = self.servers[0].log_path
                    server._temp_log = self.servers[0]._temp_log
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def prepare(self):
        path = self.servers[0].prepare()
        for server in self.servers[1:]:
            server.model = path
        return path

    def wait(self) -> int:
        """Block until a server ends (``azclaw serve --local``): an error."""
        while all(s.running for s in self.servers):
            time.sleep(0.5)
        for server in self.servers:
            if not server.running:
                server.wait()  # raises LocalServerError with its log
        raise LocalServerError("a local model server exited")

    def stop(self) -> None:
        """Stop every server; safe to call twice."""
        for server in reversed(self.servers):
            server.stop()

    def log_tail(self, lines: int = 15) -> str:
        return self.servers[0].log_tail(lines)

    def __enter__(self) -> "LocalTeamServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

