"""What the command line says, turned into values once: the team
(``TeamConfig``), the run's options and folders, the topic, the local
server. ``argparse.Namespace`` is never changed after parsing."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..agent import DEFAULT_ENDPOINT, DEFAULT_ROLES, Agent, default_team, is_writer
from ..client.endpoint import check_headers
from ..client.pool import Pool
from ..errors import ConfigError
from ..options import RunFolder, RunOptions, given
from ..team import AgentSpec, TeamSpec, parse_agents, read_team
from ..tools.approval import TerminalApprover
from ..topic import Topic, find_topic

ENDPOINT_ENV = "AZCLAW_ENDPOINT"
PACKAGE_TOPICS = Path(__file__).resolve().parent.parent / "topics"
BENCH_TOPIC = "long-coherence"
LOCAL_CONTEXT = 4096  # tokens of the local server's context (--ctx)
# the settings of an agent that the command line sets for the whole team
AGENT_SETTINGS = ("max_tokens", "temperature", "timeout", "retries", "max_outage", "stall_timeout", "tool_mode")
ALIASES = {"--message-chars": ["--message-budget"]}  # names of azclaw 0.3, still taken


def folder_of(args) -> RunFolder:
    defaults = RunFolder()
    return RunFolder(getattr(args, "output", None) or defaults.output,
                     getattr(args, "log_dir", None) or defaults.logs,
                     getattr(args, "agents_dir", None) or defaults.agents)


# -- configuration, computed once -----------------------------------------------

@dataclass
class TeamConfig:
    """What the team options say, as values: the endpoint, the agents, and
    the settings the command line gives every agent."""

    endpoint: str | list[str]
    agents: list[AgentSpec] | None  # None: the default team
    model: str
    settings: dict = dataclasses.field(default_factory=dict)  # Agent keywords for every agent
    context_budget: int | None = None  # tokens per request, when the command line or a local server sets it
    by_agent: dict[str, str] = dataclasses.field(default_factory=dict)  # agent -> its own endpoint

    @classmethod
    def of(cls, args: argparse.Namespace, **fixed) -> "TeamConfig":
        settings = {name: getattr(args, name) for name in AGENT_SETTINGS if getattr(args, name, None) is not None}
        # the bundled small models call tools only when the JSON is constrained
        settings.setdefault("tool_mode", "constrained" if args.local else "auto")
        if getattr(args, "no_stream", False):
            settings["stream"] = False
        settings.update(fixed)
        spec = team_file(args)
        headers = {**(spec.headers if spec else {}), **header_options(getattr(args, "header", []))}
        if headers:
            settings["headers"] = headers
        return cls(endpoint=team_endpoint(args, spec), agents=spec.agents if spec else team_specs(args),
                   model=args.model, settings=settings, context_budget=getattr(args, "context_budget", None))

    def team(self) -> list[Agent]:
        options = dict(self.settings)
        if not self.agents and not self.by_agent:
            return default_team(self.endpoint, model=self.model, **options)
        specs = self.agents or [AgentSpec(name, is_writer(name)) for name in DEFAULT_ROLES]
        team = []
        for s in specs:
            own = {k: v for k, v in (("model", s.model), ("tool_mode", s.tool_mode), ("max_tokens", s.max_tokens),
                                     ("temperature", s.temperature), ("budget_tokens", s.budget_tokens))
                   if v not in (None, "")}
            if s.headers:  # the agent's own headers win over the team's
                own["headers"] = {**options.get("headers", {}), **s.headers}
            endpoint = ((endpoints(s.endpoint) if isinstance(s.endpoint, str) else s.endpoint) if s.endpoint
                        else self.by_agent.get(s.name, self.endpoint))
            team.append(Agent(s.name, role=s.role or DEFAULT_ROLES.get(s.name, ""), can_write=s.can_write,
                              endpoint=endpoint, **{"model": self.model, **options, **own}))
        return team

    def served_by(self, server) -> "TeamConfig":
        """The same team, pointed at a started local server."""
        by_agent = server.endpoints if isinstance(getattr(server, "endpoints", None), dict) else {}
        # plain replies: llama-cpp-python streams without token counts (or what its cache served)
        settings = {**self.settings, "stream": False,
                    "max_tokens": self.settings.get("max_tokens") or server.max_tokens}
        budget = min(self.context_budget or server.context_budget, server.context_budget)
        return dataclasses.replace(self, endpoint=server.endpoint, model=server.model.name, by_agent=by_agent,
                                   settings=settings, context_budget=budget)


def team_specs(args) -> list[AgentSpec] | None:
    """The agents of --team or --agents (None: the default team)."""
    spec = team_file(args)
    if spec:
        return spec.agents
    agents = getattr(args, "agents", None)
    return parse_agents(agents) if agents else None


def team_file(args) -> TeamSpec | None:
    """The team file of --team (None without one)."""
    team, agents = getattr(args, "team", None), getattr(args, "agents", None)
    if team and agents:
        raise ConfigError("--team and --agents both name the team: give one of them")
    return read_team(team) if team else None


def team_endpoint(args, spec: TeamSpec | None = None) -> str | list[str] | Pool:
    """Where the agents without a URL of their own go: --endpoint (a URL or a
    fail-over list), --endpoints (a pool), the team file's pool, $AZCLAW_ENDPOINT."""
    endpoint, pool = getattr(args, "endpoint", None), getattr(args, "endpoints", None)
    if endpoint and pool:
        raise ConfigError("--endpoint and --endpoints both name the team's servers: give one of them "
                          "(--endpoint url|url: a fail-over list; --endpoints url,url: a pool)")
    if pool:
        return Pool.parse(pool)
    if endpoint:
        return endpoints(endpoint)
    if spec and spec.pool:
        return spec.pool
    return endpoints(os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT)


def header_options(values: list[str]) -> dict[str, str]:
    """The headers of ``--header NAME=VALUE`` (repeated)."""
    headers = {}
    for value in values or []:
        name, sep, text = value.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--header {value!r}: expected NAME=VALUE")
        headers[name.strip()] = text.strip()
    return check_headers(headers, "--header")


def endpoints(value: str) -> str | list[str]:
    """``url|url`` names fail-over endpoints for one agent."""
    urls = [u.strip() for u in value.split("|") if u.strip()]
    return urls[0] if len(urls) == 1 else urls


def load_topic(name: str | None) -> Topic | None:
    """A topic by file or name: ./topics/NAME.json first, then the shipped ones."""
    return Topic.load(find_topic(name, [Path.cwd() / "topics", PACKAGE_TOPICS])) if name else None


def run_options(args, config: TeamConfig) -> RunOptions:
    """The run's options: what the command line gave, over the defaults."""
    values = given(RunOptions, args)
    if getattr(args, "no_routing_key", False):
        values["routing_key"] = False
    if config.context_budget:
        values["context_budget"] = config.context_budget
    values["python"] = python_mode(args)
    if getattr(args, "approve", False):
        values["approve"] = TerminalApprover()
    return RunOptions(**values)


def local_server(args: argparse.Namespace, log_path=None, team: bool = True):
    """The local model server that --local and its options describe (not
    started): one server per agent (LocalTeamServer) unless ``team`` is False."""
    from ..local.server import DEFAULT_MAX_TOKENS as LOCAL_MAX_TOKENS, LocalServer
    from ..local.team import LocalTeamServer
    for flag in ("endpoint", "endpoints"):
        if getattr(args, flag, None):
            raise ConfigError(f"--local starts its own server: leave out --{flag}")
    specs = team_specs(args)
    if specs and any(s.endpoint for s in specs):
        raise ConfigError("--local points every agent at its own server: name the agents without URLs")
    if getattr(args, "team", None) and team_file(args).pool:
        raise ConfigError(f"--local points every agent at its own server: leave out the endpoints of {args.team}")
    model = None if args.model in (None, "default") else args.model
    options = dict(model=model, chat_format=args.chat_format, n_ctx=args.ctx,
                   max_tokens=args.max_tokens or LOCAL_MAX_TOKENS, threads=args.threads,
                   port=getattr(args, "port", 0), log_path=log_path,
                   announce=lambda line: print(line, file=sys.stderr, flush=True))
    if not team:
        return LocalServer(**options)
    names = [s.name for s in specs] if specs else list(DEFAULT_ROLES)
    return LocalTeamServer(names, **options)


def python_mode(args) -> str:
    """What run_python may do, from --no-run-python, --unsandboxed-python and --python-sandbox."""
    if args.no_run_python:
        return "off"
    if args.unsandboxed_python:
        return "unsandboxed"
    return "bwrap" if args.python_sandbox == "bwrap" else "sandboxed"
