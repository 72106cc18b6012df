"""The commands: each ``cmd_*`` takes the parsed arguments and returns the
exit code; usage errors are ``ConfigError`` (one line, exit 1, in ``main``)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

from ..errors import ConfigError
from ..options import RunFolder, RunOptions
from ..orchestrator import Orchestrator
from ..runlog.compare import format_table
from ..runlog.report import build_report
from ..runlog.status import format_status, read_status
from ..safetext import one_line
from ..topic import Topic, slug
from .config import (BENCH_TOPIC, ENDPOINT_ENV, TeamConfig, folder_of, load_topic, local_server, run_options,
                     team_file, team_specs)


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
    from ..tools.builtin import build_default_registry
    if topic and args.name:
        topic.name = slug(args.name)
    sources = [s for value in args.source for s in value.split(",") if s] or None
    folder = folder_of(args)
    options = run_options(args, config)
    with build_default_registry() as registry:  # MCP servers stop with the run, however it ends
        if servers:
            from ..mcp import start_servers
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


def cmd_bench(args) -> int:
    from ..bench import check_fresh, mode_folders, parse_modes, run_bench
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
    from ..mcp import TopicCommands, servers_of
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
    from ..doctor import diagnose, diagnose_local
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
        from ..mcp.doctor import check_mcp
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
    from ..mcp.server import serve
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
    from ..runlog.serve import ReportServer
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
    from ..runlog.show import parse_rounds, show
    from ..runlog.transcript import Selection
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
