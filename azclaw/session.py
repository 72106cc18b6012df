"""What an agent has during one run: its client, the tool mode it uses now,
the context its server allows, and the nudges and skips the run's watchers
asked for. ``Agent`` holds settings; a session is made for each run from a
client factory (the seam for tests and other backends):
``client_factory(agent, outages) -> LLMClient``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from .agent import Agent
from .client.llm import LLMClient, Outages
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


def start_sessions(agents: list[Agent], context_budget: int,
                   factory: ClientFactory | None = None) -> dict[str, AgentSession]:
    """A session for every agent of a run; their clients share one ``Outages``."""
    outages = Outages()
    make = factory or default_client
    return {a.name: AgentSession(a, make(a, outages), a.context_budget or context_budget) for a in agents}
