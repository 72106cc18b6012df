"""An agent: a name, a role, the endpoint(s) that think for it, and what it may do."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .toolmodes import check_mode, starting_mode
from .client.llm import DEFAULT_MAX_OUTAGE, DEFAULT_STALL_TIMEOUT, DEFAULT_TIMEOUT, LLMClient

DEFAULT_ENDPOINT = "http://localhost:8080/v1/chat/completions"
DEFAULT_MAX_TOKENS = 2048
WRITER_NAMES = frozenset({"developer", "dev", "coder"})  # these write unless told otherwise
DEFAULT_ROLES = {
    "architect": "You design the solution: components, file layout, data models and interfaces. "
                 "Be specific, and store every decision with remember.",
    "developer": "You write the code. Follow the architect's design, write complete files with "
                 "write_file, and run them with run_python when that helps.",
    "reviewer": "You review what was written for bugs, security problems and departures from the "
                "design. Read the files, name concrete problems, and remember what must be fixed.",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Agent:
    """One member of the team.

    ``endpoint`` may be a list: the agent fails over to the next URL when one
    is down. ``tools`` narrows the tools the agent is offered (None: every
    tool its role allows); only ``can_write`` agents get write_file and
    run_python. ``root`` is its AgentAZAll folder (default
    ``<agents_dir>/<name>``). ``api_key`` defaults to $AZCLAW_API_KEY.
    ``context_budget`` overrides the orchestrator's for this agent.
    """

    name: str
    role: str = ""
    endpoint: str | list[str] = DEFAULT_ENDPOINT
    model: str = "default"
    tools: list[str] | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.7
    root: str | Path | None = None
    can_write: bool = False
    api_key: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    retries: int | None = None  # None: no cap on attempts, max_outage decides
    context_budget: int | None = None  # tokens per request; None: the orchestrator's
    max_outage: float = DEFAULT_MAX_OUTAGE  # seconds its endpoints may fail before a request gives up
    stall_timeout: float = DEFAULT_STALL_TIMEOUT  # a streamed reply silent this long is a hung request
    stream: bool = True
    tool_mode: str = "auto"  # native, text, constrained, or auto (toolmodes.py)
    client: LLMClient = field(init=False, repr=False, compare=False)
    active_mode: str = field(init=False, repr=False, compare=False)  # the mode in use (auto starts native)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"agent name {self.name!r}: use letters, digits, '_', '-' or '.' "
                              "(up to 64 characters, starting with a letter or digit)")
        self.active_mode = starting_mode(check_mode(self.tool_mode, f"agent {self.name}: tool_mode"))
        self.client = LLMClient(self.endpoint, self.model, self.api_key, self.timeout, self.retries,
                                max_outage=self.max_outage, stall_timeout=self.stall_timeout, stream=self.stream)

    def fit_to_server(self, default_budget: int) -> None:
        """Where the server tells its context size, fit this agent's requests
        to it from the start (a reply has to fit too)."""
        size = self.client.context_size()
        budget = self.context_budget or default_budget
        if size and size - self.max_tokens < budget:
            self.context_budget = max(256, size - self.max_tokens)

    @property
    def endpoints(self) -> list[str]:
        return self.client.endpoints


def is_writer(name: str) -> bool:
    """The writer rule: developer, dev and coder write; everyone else reads."""
    return name.lower() in WRITER_NAMES


def default_team(endpoint: str | list[str] = DEFAULT_ENDPOINT, names: list[str] | None = None,
                 **options) -> list[Agent]:
    """The team azclaw runs when none is given: architect, developer and
    reviewer with their roles (or ``names``, with the role of each that has
    one), writers by the writer rule. ``options`` go to every Agent."""
    return [Agent(name, role=DEFAULT_ROLES.get(name, ""), endpoint=endpoint, can_write=is_writer(name), **options)
            for name in (names or list(DEFAULT_ROLES))]
