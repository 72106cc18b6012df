"""An agent: a name, a role, the endpoint(s) that think for it, and what it may do.

``Agent`` is settings only: nothing in it changes while a run goes. What
does change (the tool mode in use, the context the server allows, the
client and its outage bookkeeping) lives in the run's ``AgentSession``
(``session.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .client.endpoint import Endpoint, check_headers
from .client.pool import Pool
from .client.llm import DEFAULT_MAX_OUTAGE, DEFAULT_STALL_TIMEOUT, DEFAULT_TIMEOUT, check_limits
from .errors import ConfigError
from .options import option
from .toolmodes import MODES, check_mode

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
    is down (``endpoints`` holds them parsed); or a ``Pool`` the team shares:
    a run keeps the agent on one of its servers while that one is up. ``tools`` narrows the tools
    the agent is offered (None: every tool its role allows); only
    ``can_write`` agents get write_file and run_python. ``root`` is its
    AgentAZAll folder (default ``<agents_dir>/<name>``). ``api_key``
    defaults to $AZCLAW_API_KEY. ``context_budget`` overrides the run's for
    this agent. ``headers`` go with every request (a gateway's own).
    ``budget_tokens`` ends the run (reason budget) once this agent has used
    that many tokens, counted over all sessions of the run.
    """

    name: str
    role: str = ""
    endpoint: str | list[str] | Pool = DEFAULT_ENDPOINT
    model: str = "default"
    tools: list[str] | None = None
    max_tokens: int = option(DEFAULT_MAX_TOKENS, "reply limit per request (256 with --local)", metavar="TOKENS",
                             group="requests")
    temperature: float = option(0.7, "sampling temperature", metavar="T", group="requests")
    root: str | Path | None = None
    can_write: bool = False
    api_key: str | None = field(default=None, repr=False)
    timeout: float = option(DEFAULT_TIMEOUT, "seconds one request may take, as a whole (a local model on a CPU "
                            "is slow)", metavar="SECONDS", group="requests")
    retries: int | None = option(None, "cap on the retries of a failed request (default: none, --max-outage "
                                 "decides)", metavar="N", group="requests", kind=int)
    context_budget: int | None = None  # tokens per request; None: the run's
    max_outage: float = option(DEFAULT_MAX_OUTAGE, "retry a request while its endpoints keep failing this long",
                               metavar="SECONDS", group="requests")
    stall_timeout: float = option(DEFAULT_STALL_TIMEOUT, "a streamed reply silent this long is a hung request, "
                                  "retried", metavar="SECONDS", group="requests")
    stream: bool = True
    tool_mode: str = option("auto", "how tool calls travel: " + ", ".join(MODES) + " (native: the tools field; "
                            "text: <tool_call> blocks; constrained: JSON by a schema; auto: native, moving on when "
                            "calls fail; constrained with --local)", metavar="MODE", group="requests")
    headers: dict[str, str] = field(default_factory=dict)
    budget_tokens: int | None = None  # tokens it may use over the run (prompt + completion); None: no own budget
    endpoints: tuple[Endpoint, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ConfigError(f"agent name {self.name!r}: use letters, digits, '_', '-' or '.' "
                              "(up to 64 characters, starting with a letter or digit)")
        check_mode(self.tool_mode, f"agent {self.name}: tool_mode")
        if isinstance(self.endpoint, Pool):
            self.endpoints = self.endpoint.endpoints
        else:
            urls = [self.endpoint] if isinstance(self.endpoint, (str, Endpoint)) else list(self.endpoint)
            if not urls:
                raise ConfigError(f"agent {self.name}: endpoint: at least one URL is needed")
            self.endpoints = tuple(Endpoint.parse(u) for u in urls)
        self.headers = check_headers(self.headers, f"agent {self.name}: headers")
        if self.budget_tokens is not None and (isinstance(self.budget_tokens, bool)
                                               or not isinstance(self.budget_tokens, int) or self.budget_tokens < 1):
            raise ConfigError(f"agent {self.name}: budget_tokens: expected a whole number >= 1, "
                              f"got {self.budget_tokens!r}")
        check_limits(timeout=self.timeout, stall_timeout=self.stall_timeout, max_outage=self.max_outage,
                     retries=self.retries)


    @property
    def pool(self) -> Pool | None:
        """The team's pool the agent is on (None: its own endpoint or fail-over list)."""
        return self.endpoint if isinstance(self.endpoint, Pool) else None


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
