"""The ``azclaw`` command: a thin layer over the library.

Only this module reads argv, prints usage errors and chooses exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .agent import DEFAULT_ENDPOINT, Agent
from .approval import TerminalApprover
from .errors import AzclawError, ConfigError
from .orchestrator import Orchestrator
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


def cmd_run(args) -> int:
    search = [Path.cwd() / "topics", Path(__file__).resolve().parent.parent / "topics"]
    topic = Topic.load(find_topic(args.topic, search)) if args.topic else None
    agents = build_team(args)
    sources = [s for value in args.source for s in value.split(",") if s]
    orch = Orchestrator(agents, topic=topic, output_dir=args.output, log_dir=args.log_dir,
                        source_dirs=sources, agents_dir=args.agents_dir, parallel=args.parallel,
                        run_python=not args.no_run_python, verbose=not args.quiet,
                        max_failed_rounds=args.max_failed_rounds,
                        approve=TerminalApprover() if args.approve else None)
    if args.task:
        orch.set_task(args.task)
    resume = True if args.resume == "" else args.resume
    orch.run(max_rounds=args.max_rounds, resume=resume)
    return 0


def cmd_stop(args) -> int:
    path = Path(args.dir) / "STOP"
    path.write_text("stop requested by azclaw stop\n", encoding="utf-8")
    print(f"azclaw: wrote {path}; the run stops after its current round")
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
                                "  azclaw run --topic todo-api --resume logs/todo_api_checkpoint.json")
    what = run.add_mutually_exclusive_group(required=True)
    what.add_argument("--topic", help="topic file, or NAME for topics/NAME.json")
    what.add_argument("--task", help="the task as plain text")
    run.add_argument("--endpoint", help=f"OpenAI-compatible URL for every agent; url|url fails over "
                                        f"(default: ${ENDPOINT_ENV} or {DEFAULT_ENDPOINT})")
    run.add_argument("--agents", help="team as name[/write|/read][:url[|url]],... (developer, dev and "
                                      "coder write unless marked /read)")
    run.add_argument("--model", default="default", help="model name sent to the server")
    run.add_argument("--output", default="./output", help="folder the writer writes into (default ./output)")
    run.add_argument("--source", action="append", default=[], metavar="DIRS",
                     help="folders agents may read, comma-separated or repeated")
    run.add_argument("--max-rounds", type=int, help="number of the last round (default: the topic's "
                                                    "last phase, else 10)")
    run.add_argument("--resume", nargs="?", const="", metavar="CHECKPOINT",
                     help="continue from a checkpoint (default: this topic's in --log-dir)")
    run.add_argument("--log-dir", default="./logs", help="checkpoints, journal and log (default ./logs)")
    run.add_argument("--agents-dir", default="./agents", help="AgentAZAll roots of the agents (default ./agents)")
    run.add_argument("--max-tokens", type=int, default=2048, help="reply limit per request (default 2048)")
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
    run.add_argument("--no-run-python", action="store_true", help="turn the run_python tool off")
    run.add_argument("--quiet", action="store_true", help="no progress on the console")
    run.set_defaults(func=cmd_run)

    stop = sub.add_parser("stop", help="ask a running azclaw to stop after its current round",
                          epilog="example: azclaw stop   (writes ./STOP)")
    stop.add_argument("--dir", default=".", help="the run's working folder (default .)")
    stop.set_defaults(func=cmd_stop)
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
