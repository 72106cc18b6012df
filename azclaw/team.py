"""A team described per agent: the ``--agents`` spec and team files.

``--agents "name[/write|/read][@model][:url[|url]],..."``: without a marker
the writer rule decides (developer, dev and coder write); ``@model`` is the
model name sent for that agent (it may hold ``:``, as Ollama's do); the URL
starts with http:// or https://.

A team file (``--team team.json``) says more per agent and is validated
once, every problem naming the file and the field::

    {"endpoints": ["http://gpu1:8080", "http://gpu2:8080"],
     "headers": {"X-Team": "ledger"},
     "agents": [
      {"name": "planner", "role": "You plan.", "model": "qwen3:8b",
       "endpoint": "http://gpu:11434", "max_tokens": 1024, "tool_mode": "auto", "budget_tokens": 500000},
      {"name": "coder", "write": true, "endpoint": ["http://a:8080", "http://b:8080"],
       "headers": {"X-Gateway-Route": "code"}},
      {"name": "reviewer"}
    ]}

``endpoints`` is the team's pool: agents without an ``endpoint`` of their
own are spread over it and each stays on one server while it is up. An
agent's ``endpoint`` list is its own fail-over list, tried in order.
``headers`` go with every request of the team; an agent's own win.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .agent import is_writer
from .client.endpoint import check_headers
from .client.pool import Pool
from .errors import ConfigError
from .files import MB, read_json
from .toolmodes import MODES

_SPEC = re.compile(r"(?P<name>[^/@:]*)(?:/(?P<marker>[^@:]*))?(?:@(?P<model>.+?))?(?::(?P<url>https?://.+))?")
_FIELDS = {"name", "role", "write", "model", "endpoint", "max_tokens", "tool_mode", "temperature", "budget_tokens",
           "headers"}
_TEAM_FIELDS = ("agents", "endpoints", "headers")


@dataclass
class AgentSpec:
    """What a spec or a team file says of one agent; empty means the default."""

    name: str
    can_write: bool
    endpoint: str | list[str] = ""
    model: str = ""
    role: str = ""
    max_tokens: int | None = None
    tool_mode: str = ""
    temperature: float | None = None
    budget_tokens: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class TeamSpec:
    """What a team file says: its agents, the team's pool (None: none) and the team's headers."""

    agents: list[AgentSpec]
    pool: Pool | None = None
    headers: dict[str, str] = field(default_factory=dict)


def parse_agents(spec: str) -> list[AgentSpec]:
    """The agents of an ``--agents`` spec."""
    team = []
    for n, item in enumerate(s.strip() for s in spec.split(",")):
        if not item:
            raise ConfigError(f"--agents: entry {n + 1} is empty (expected name[/write|/read][@model][:url])")
        found = _SPEC.fullmatch(item)
        if not found:
            raise ConfigError(f"--agents: {item!r}: expected name[/write|/read][@model][:http://host:port/...]")
        marker = found["marker"] or ""
        if marker not in ("", "write", "read"):
            raise ConfigError(f"--agents: {item!r}: unknown marker /{marker}; use /write or /read")
        name = found["name"].strip()
        urls = [u.strip() for u in (found["url"] or "").split("|") if u.strip()]
        team.append(AgentSpec(name, marker == "write" or (not marker and is_writer(name)),
                              urls[0] if len(urls) == 1 else urls, (found["model"] or "").strip()))
    return team


def load_team(path: str | Path) -> list[AgentSpec]:
    """The agents of a team file."""
    return read_team(path).agents


def read_team(path: str | Path) -> TeamSpec:
    """A team file: its agents, pool and headers."""
    data = read_json(Path(path), "team file", ConfigError, limit=MB)
    where = str(path)
    if not isinstance(data, dict) or not isinstance(data.get("agents"), list) or not data["agents"]:
        raise ConfigError(f"{where}: agents: expected a list of at least one agent")
    unknown = sorted(set(data) - set(_TEAM_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: unknown field; valid fields: {', '.join(_TEAM_FIELDS)}")
    pool = None
    if "endpoints" in data:
        urls = data["endpoints"]
        if not isinstance(urls, list) or not urls or \
                not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
            raise ConfigError(f"{where}: endpoints: expected a list of http(s):// URLs (the team's pool)")
        try:
            pool = Pool(tuple(urls))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    headers = check_headers(data.get("headers", {}), f"{where}: headers")
    return TeamSpec([_agent(raw, f"{where}: agents[{i}]") for i, raw in enumerate(data["agents"])], pool, headers)


def _agent(raw, where: str) -> AgentSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field; valid fields: {', '.join(sorted(_FIELDS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name: expected the agent's name")

    def get(key, kinds, what):
        value = raw.get(key)
        allowed = kinds if isinstance(kinds, tuple) else (kinds,)
        if value is not None and (not isinstance(value, allowed) or isinstance(value, bool) and bool not in allowed):
            raise ConfigError(f"{where}.{key}: expected {what}, got {value!r}"[:200])
        return value

    endpoint = raw.get("endpoint", "")
    urls = [endpoint] if isinstance(endpoint, str) else endpoint
    if not isinstance(urls, list) or not all(isinstance(u, str) and (not u or u.startswith(("http://", "https://")))
                                             for u in urls):
        raise ConfigError(f"{where}.endpoint: expected an http(s):// URL or a list of them")
    mode = get("tool_mode", str, "a string") or ""
    if mode and mode not in MODES:
        raise ConfigError(f"{where}.tool_mode: {mode!r} is not one of {', '.join(MODES)}")
    max_tokens = get("max_tokens", int, "a whole number")
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"{where}.max_tokens: expected a whole number >= 1, got {max_tokens}")
    write = get("write", bool, "true or false")
    budget = get("budget_tokens", int, "a whole number")
    if budget is not None and budget < 1:
        raise ConfigError(f"{where}.budget_tokens: expected a whole number >= 1, got {budget}")
    headers = check_headers(raw.get("headers", {}), f"{where}.headers")
    return AgentSpec(name.strip(), is_writer(name) if write is None else write, endpoint,
                     get("model", str, "a string") or "", get("role", str, "a string") or "", max_tokens, mode,
                     get("temperature", (int, float), "a number"), budget, headers)
