"""What an agent has during one run: its client, the tool mode it uses now,
the context its server allows, and the nudges and skips the run's watchers
asked for. ``Agent`` holds settings; a session is made for each run from a
client factory (the seam for tests and other backends):
``client_factory(agent, outages) -> LLMClient``.

``start_sessions`` gives every client the run's routing key for its agent
(``azclaw-<run>-<agent>`` in the routing header, unless the agent's own
headers name it) and puts the agents whose endpoint is a ``Pool`` on one
``ServerPool`` per pool, shared by their clients.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from .agent import Agent
from .client.llm import LLMClient, Outages
from .client.pool import ROUTING_HEADER, ServerPool, routing_key
from .toolmodes import starting_mode

ClientFactory = Callable[[Agent, Outages], LLMClient]


def default_client(agent: Agent, outages: Outages) -> LLMClient:
    """The client an agent's settings describe."""
    return LLMClient(list(agent.endpoints), agent.model, agent.api_key, agent.timeout, agent.retries,
                     max_outage=agent.max_outage, stall_timeout=agent.stall_timeout, stream=agent.stream,
                     outages=outages, headers=agent.headers)


@dataclass
class AgentSession:
    """One agent in one run."""

    agent: Agent
    client: LLMClient
    context_budget: int  # tokens per request: the run's, lowered to what the server allows
    tool_mode: str = ""  # the mode in use (``auto`` starts native)
    cancel: threading.Event = field(default_factory=threading.Event)
    nudges: list[str] = field(default_factory=list)  # said once in the next prompt
    skip_rounds: int = 0  # rounds the agent sits out (a watcher's Skip)
    prose_turns: int = 0  # an auto agent's turns in a row without a tool call (toolmodes.prose_move)
    calls_travel: bool = False  # an auto agent's calls have come through in its current mode

    def __post_init__(self):
        self.tool_mode = self.tool_mode or starting_mode(self.agent.tool_mode)
        self.client.cancel = self.cancel

    @property
    def name(self) -> str:
        return self.agent.name

    def fit_to_server(self) -> None:
        """Where the server tells its context size, fit the requests to it
        from the start (a reply has to fit too)."""
        size = self.client.context_size()
        if size and size - self.agent.max_tokens < self.context_budget:
            self.context_budget = max(256, size - self.agent.max_tokens)

    def take_nudges(self) -> str:
        text, self.nudges = "\n".join(dict.fromkeys(self.nudges)), []
        return text


def start_sessions(agents: list[Agent], context_budget: int, factory: ClientFactory | None = None, *,
                   run: str = "run", routing_header: str | None = ROUTING_HEADER,
                   per_server: int = 0) -> dict[str, AgentSession]:
    """A session for every agent of run ``run``; their clients share one
    ``Outages`` and, for agents on a pool, one ``ServerPool`` per pool.
    ``routing_header`` None: no routing key is sent."""
    outages = Outages()
    make = factory or default_client
    pools: dict = {}
    sessions = {}
    for agent in agents:
        client = make(agent, outages)
        key = routing_key(run, agent.name)
        if routing_header and not any(h.lower() == routing_header.lower() for h in client.headers):
            client.headers[routing_header] = key
        if agent.pool is not None:
            if agent.pool not in pools:
                pools[agent.pool] = ServerPool(agent.pool, outages, per_server=per_server or None,
                                               api_key=client.api_key)
            client.use_pool(pools[agent.pool], key)
        sessions[agent.name] = AgentSession(agent, client, agent.context_budget or context_budget)
    for pool in pools.values():  # homes in team order: the same team gets the same homes in every run
        pool.assign([s.client.key for s in sessions.values() if s.client.pool is pool])
    return sessions


def stop_sessions(sessions: dict[str, AgentSession]) -> None:
    """End what a run's sessions keep going (the pools' checks of servers that are down)."""
    for pool in {id(s.client.pool): s.client.pool for s in sessions.values()
                 if getattr(s.client, "pool", None) is not None}.values():
        pool.close()
