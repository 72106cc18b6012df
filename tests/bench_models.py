"""Which bundled model, which tool-call mode, which cache layout, and how
well whole turns use their tools. Run by hand, never by pytest (it needs the
``local`` extra and ~25 minutes on 2 CPU cores):

    python tests/bench_models.py                       # modes and cache, N=20
    python tests/bench_models.py -n 5 --turns 12       # a quick look
    python tests/bench_models.py --part modes --models smollm2
    python tests/bench_models.py --part turns          # the README's first command and 4 other tasks
    python tests/bench_models.py --part turns --journals runs/*/logs/*_journal.jsonl

Part ``turns`` runs ``azclaw run --local --task TASK --max-rounds 2`` (the
README's first command, and four other tasks: ``TASKS``) in fresh folders
and reads each journal: per turn,
the tool calls that ran, the failed ones (an error result, or a reply whose
calls did not parse), and the repeats (calls that repeat an earlier call of
the turn, identically or nearly, by ``azclaw.repeats``: skipped ones, and
ones that ran, as they did before near-repeats were skipped). With
``--journals`` it only reads journals; ``--code DIR`` runs another checkout
(an older azclaw, say). The bundled server samples with the same seed each
time it starts, so a run of one task repeats exactly: the tasks are the sample.

Every request is an azclaw request: azclaw's own system prompt for one of the
default team (architect, developer, reviewer, in turn), its tools (recall and
remember; the developer also write_file) and a user message with the previous
round's messages and a directed task whose right tool is known (remember a
decision, write a file, recall the database choice).

Part ``modes``, per model and mode, against one server per agent:
  text         tools described in the prompt, ``<tool_call>`` text parsed
               (the bundled chat formats write the tools in this way)
  native       llama-cpp-python's ``chatml-function-calling`` (the ``tools``
               field, structured ``tool_calls`` in the reply)
  constrained  ``response_format`` from azclaw.constrained: a tool or the reply
  required     the same without the reply alternative (a step that must call)
Part ``cache``, the default model in constrained mode, per server layout:
  one server with llama-cpp-python's default flags (logits_all on), one server
  with logits_all off, one server with its RAM cache, one server per agent.

Columns: valid = replies with a call the registry would run (offered tool,
arguments of the right names and types); sensible = the directed task's
tool with non-empty arguments; s/turn = wall time per request; re-eval =
prompt tokens evaluated again on warm turns (an agent's second turn on),
from ``usage.prompt_tokens_details.cached_tokens`` that the bundled server
reports; RSS/PSS = the server processes' memory (/proc) after 50 turns
(PSS counts the shared model file once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from azclaw import Agent, Topic
from azclaw.tools.builtin import build_default_registry
from azclaw.constrained import instructions, parse_reply, step_format
from azclaw.errors import EndpointError
from azclaw.client.llm import fetch_json, parse_completion
from azclaw.local.server import LocalServer
from azclaw.context import ContextMode, Message
from azclaw.prompt import round_part, stable_part
from azclaw.repeats import Made, find_repeat
from azclaw.tools.registry import _check_arguments

TASK = "Plan a command-line todo app in Python: files, commands and how data is stored."
TASKS = ("Plan a command-line todo app in Python",  # the README's first command
         "Design a URL shortener with an SQLite database",
         "Write a Python script that converts CSV files to JSON",
         "Plan a chat server in Python with rooms and nicknames",
         "Build a unit converter library in Python with tests")
TEAM = [
    ("architect", "You design the solution: components, file layout, data models and interfaces. "
                  "Be specific, and store every decision with remember.", False,
     "Store this decision in memory with remember: the todo app keeps its data in SQLite, in todo.db.",
     "remember"),
    ("developer", "You write the code. Follow the architect's design, write complete files with "
                  "write_file, and run them with run_python when that helps.", True,
     "Write the file todo.py with write_file: a Python script that prints 'todo'.", "write_file"),
    ("reviewer", "You review what was written for bugs, security problems and departures from the "
                 "design. Read the files, name concrete problems, and remember what must be fixed.", False,
     "Use recall to look up what the team decided about the database.", "recall"),
]
TOOL_NAMES = ("recall", "remember", "write_file")
MODES = ("text", "native", "constrained", "required")
LAYOUTS = ("default flags", "logits_all off", "RAM cache", "server per agent")
RSS_AT = 50


@dataclass
class Tally:
    requests: int = 0
    valid: int = 0
    sensible: int = 0
    errors: int = 0
    cut: int = 0
    seconds: list[float] = field(default_factory=list)
    reeval: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    samples: list[str] = field(default_factory=list)

    def row(self, label: str) -> str:
        mean = statistics.mean(self.seconds) if self.seconds else 0.0
        share = f"{100 * statistics.mean(self.reeval):.0f}%" if self.reeval else "-"
        prompt = f"{statistics.mean(self.prompt_tokens):.0f}" if self.prompt_tokens else "-"
        completion = f"{statistics.mean(self.completion_tokens):.0f}" if self.completion_tokens else "-"
        return (f"| {label} | {self.valid}/{self.requests} | {self.sensible}/{self.requests} | {mean:.1f} | "
                f"{share} | {prompt} | {completion} | {self.rss_mb:.0f} / {self.pss_mb:.0f} | {self.errors} | "
                f"{self.cut} |")


HEADER = ("| {} | valid calls | sensible | s/turn | re-eval (warm) | prompt tokens | reply tokens | "
          "RSS / PSS MB | errors | cut off |\n|---|---|---|---|---|---|---|---|---|---|")


def memory_mb(pids: list[int]) -> tuple[float, float]:
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss / 1024, pss / 1024


class Team:
    """The three agents, their prompts and tools, and the servers they talk to."""

    def __init__(self, servers: list[LocalServer], temperature: float = 0.7):
        self.servers = servers
        self.temperature = temperature  # azclaw's Agent default
        registry = build_default_registry()
        self.agents = [Agent(name, role=role, can_write=writer) for name, role, writer, _, _ in TEAM]
        self.tools = {a.name: [t for t in registry.allowed(a.can_write) if t.name in TOOL_NAMES]
                      for a in self.agents}
        self.topic = Topic.from_task(TASK)
        self.previous: list[Message] = []
        self.seen: set[str] = set()

    def server(self, index: int) -> LocalServer:
        return self.servers[index % len(self.servers)]

    def request(self, turn: int, mode: str, max_tokens: int) -> tuple[dict, object]:
        index = turn % len(self.agents)
        agent, (_, _, _, directive, _) = self.agents[index], TEAM[index]
        tools = self.tools[agent.name]
        round_no = turn // len(self.agents) + 1
        system = stable_part(agent, self.topic, TASK, self.agents, tools)
        step = None
        if mode in ("constrained", "required"):
            step = step_format(tools, max_tokens, allow_reply=mode == "constrained")
            system += "\n\n" + instructions(step)
        system += "\n\n" + round_part(round_no, 99, None, self.topic)
        user = ContextMode().conversation(round_no, self.previous[-3:], TASK, 0).text + "\n\n" + directive
        payload = {"model": "local", "messages": [{"role": "system", "content": system},
                                                  {"role": "user", "content": user}],
                   "max_tokens": max_tokens, "temperature": self.temperature}
        if step is not None:
            payload["response_format"] = step.response_format()
        else:
            payload["tools"] = [t.schema() for t in tools]
            payload["tool_choice"] = "auto"
        return payload, step

    def turn(self, turn: int, mode: str, tally: Tally, max_tokens: int, timeout: float) -> None:
        index = turn % len(self.agents)
        agent, expected = self.agents[index], TEAM[index][4]
        payload, step = self.request(turn, mode, max_tokens)
        tally.requests += 1
        start = time.monotonic()
        try:
            reply = fetch_json(self.server(index).endpoint, payload, timeout=timeout)
        except EndpointError as exc:
            tally.errors += 1
            tally.samples.append(f"{agent.name}: {exc}")
            return
        tally.seconds.append(time.monotonic() - start)
        if not reply.ok or not isinstance(reply.data, dict):
            tally.errors += 1
            tally.samples.append(f"{agent.name}: HTTP {reply.status} {reply.text[:200]}")
            return
        try:
            completion = parse_completion(reply.data)
        except EndpointError as exc:
            tally.errors += 1
            tally.samples.append(f"{agent.name}: {exc}")
            return
        usage = reply.data.get("usage") or {}
        prompt = usage.get("prompt_tokens") or 0
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if agent.name in self.seen and prompt and cached is not None:
            tally.reeval.append((prompt - cached) / prompt)
            tally.prompt_tokens.append(prompt)
        self.seen.add(agent.name)
        tally.completion_tokens.append(usage.get("completion_tokens") or 0)
        tally.cut += completion.finish_reason == "length"
        if step is not None:
            read = parse_reply(completion.text, step, completion.finish_reason)
            calls, said = read.calls, read.message or read.error
        else:
            calls, said = completion.tool_calls, completion.text
        offered = {t.name: t for t in self.tools[agent.name]}
        valid = [c for c in calls if c.name in offered and c.arguments is not None
                 and not _check_arguments(offered[c.name], dict(c.arguments))]
        tally.valid += bool(valid)
        tally.sensible += any(c.name == expected and all(str(v).strip() for v in c.arguments.values())
                              and c.arguments for c in valid)
        shown = "; ".join(f"{c.name}({c.raw_arguments[:80]})" for c in calls) or said[:120].replace("\n", " ")
        tally.samples.append(f"{agent.name}: {shown}")
        self.previous.append(Message(turn // len(self.agents) + 1, agent.name, said or shown))


def run(servers: list[LocalServer], mode: str, n: int, args, counter: list | None = None) -> Tally:
    team = Team(servers, args.temperature)
    max_tokens, timeout = args.max_tokens, args.timeout
    tally = Tally()
    for turn in range(n):
        team.turn(turn, mode, tally, max_tokens, timeout)
        if counter is not None:
            counter[0] += 1
            if counter[0] == RSS_AT:
                counter.append(memory_mb([s.process.pid for s in servers]))
    tally.rss_mb, tally.pss_mb = counter[1] if counter and len(counter) > 1 else \
        memory_mb([s.process.pid for s in servers])
    return tally


def start(model: str, count: int, args, log: Path, chat_format: str | None = None,
          server_args: tuple = ()) -> list[LocalServer]:
    servers = [LocalServer(model=model, chat_format=chat_format, max_tokens=args.max_tokens,
                           n_ctx=args.ctx, log_path=log, server_args=server_args) for _ in range(count)]
    try:
        for server in servers:
            server.start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def stop(servers: list[LocalServer]) -> None:
    for server in servers:
        server.stop()


def part_modes(args, logs: Path) -> None:
    print(HEADER.format("model, mode"), flush=True)
    for model in args.models:
        for mode in args.modes:
            chat_format = "chatml-function-calling" if mode == "native" else None
            servers = start(model, 3, args, logs / f"{model}-{mode}.log", chat_format)
            try:
                n = min(args.n, args.native_n) if mode == "native" else args.n
                tally = run(servers, mode, n, args, counter=[0])
            finally:
                stop(servers)
            print(tally.row(f"{model}, {mode}"), flush=True)
            if args.samples:
                print("\n".join("    " + s for s in tally.samples[:args.samples]), file=sys.stderr, flush=True)


def part_cache(args, logs: Path) -> None:
    print(HEADER.format(f"{args.cache_model}, constrained, {args.turns} turns"), flush=True)
    for layout in args.layouts:
        flags = {"default flags": ("--logits_all", "True"), "RAM cache": ("--cache", "True")}.get(layout, ())
        count = 3 if layout == "server per agent" else 1
        servers = start(args.cache_model, count, args, logs / f"cache-{layout.replace(' ', '-')}.log",
                        server_args=flags)
        try:
            tally = run(servers, "constrained", args.turns, args, counter=[0])
        finally:
            stop(servers)
        print(tally.row(layout), flush=True)


@dataclass
class TurnTally:
    """Whole turns of real runs, from their journals."""

    runs: int = 0
    turns: int = 0
    calls: int = 0  # that ran
    failed: int = 0
    skipped: int = 0  # repeats skipped
    repeats_ran: int = 0  # repeats that ran (journals of azclaw before near-repeats were skipped)
    memories: int = 0
    files: int = 0
    seconds: float = 0.0

    def per_turn(self, n: int) -> str:
        return f"{n / self.turns:.2f}" if self.turns else "-"

    def row(self, label: str) -> str:
        return (f"| {label} | {self.runs} | {self.turns} | {self.per_turn(self.calls)} | {self.per_turn(self.failed)} | "
                f"{self.per_turn(self.skipped + self.repeats_ran)} ({self.per_turn(self.skipped)} skipped) | "
                f"{self.memories} | {self.files} | {self.seconds / max(1, self.runs):.0f} |")


TURN_HEADER = ("| {} | runs | turns | calls/turn | failed/turn | repeats/turn | memories | files | s/run |\n"
               "|---|---|---|---|---|---|---|---|---|")


def tally_journal(path: Path, tally: TurnTally) -> None:
    """Add one journal's turns (probes apart) to ``tally``."""
    events = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    tally.runs += 1
    for e in events:
        if e.get("event") == "run_end":
            tally.seconds += (e.get("stats") or {}).get("elapsed", 0.0)
        if e.get("event") != "turn":
            continue
        tally.turns += 1
        tally.memories += len(e.get("memories") or [])
        tally.files += len(e.get("files") or [])
        made: list[Made] = []
        for use in e.get("calls") or []:
            if use.get("duplicate"):
                tally.skipped += 1
                continue
            tally.failed += use.get("ok") is False
            if not use.get("tool"):
                continue
            tally.calls += 1
            try:
                arguments = json.loads(use.get("arguments") or "{}")
            except ValueError:
                arguments = None
            arguments = arguments if isinstance(arguments, dict) else None
            if find_repeat(use["tool"], arguments, use.get("arguments") or "", made):
                tally.repeats_ran += 1
            made.append(Made(use["tool"], arguments, use.get("arguments") or "", use.get("result") or "",
                             use.get("ok") is not False))


def part_turns(args) -> None:
    tally = TurnTally()
    journals = [Path(j) for j in args.journals]
    code = Path(args.code or Path(__file__).resolve().parents[1]).resolve()
    for task in ([] if journals else args.tasks):
        folder = Path(tempfile.mkdtemp(prefix="azclaw-turns-"))
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "azclaw", "run", "--local", "--task", task, "--max-rounds", "2",
                               "--quiet"], cwd=folder, capture_output=True, text=True, timeout=args.timeout * 20,
                              env={**os.environ, "PYTHONPATH": str(code)})
        print(f"{task}: exit {proc.returncode} in {time.monotonic() - started:.0f} s, {folder}", file=sys.stderr,
              flush=True)
        journals += sorted((folder / "logs").glob("*_journal.jsonl"))
    for journal in journals:
        tally_journal(journal, tally)
    print(TURN_HEADER.format("azclaw run --local, 2 rounds"))
    print(tally.row(args.label))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("modes", "cache", "turns", "all"), default="all",
                        help="all: modes and cache")
    parser.add_argument("--models", default="smollm2", type=lambda s: s.split(","))
    parser.add_argument("--modes", default=",".join(MODES), type=lambda s: s.split(","))
    parser.add_argument("--layouts", default=",".join(LAYOUTS), type=lambda s: s.split(","))
    parser.add_argument("--cache-model", default="smollm2")
    parser.add_argument("-n", type=int, default=20, help="requests per model and mode")
    parser.add_argument("--native-n", type=int, default=8, help="requests in native mode (slow)")
    parser.add_argument("--turns", type=int, default=RSS_AT, help="requests per cache layout")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--temperature", type=float, default=0.7, help="default: azclaw's Agent default")
    parser.add_argument("--samples", type=int, default=0, help="print this many replies per row (stderr)")
    parser.add_argument("--logs", default="bench-logs")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="the tasks to run once each (part turns)")
    parser.add_argument("--code", help="the azclaw checkout to run (part turns; default: this one)")
    parser.add_argument("--journals", nargs="*", default=[], help="read these journals instead of running (turns)")
    parser.add_argument("--label", default="this checkout", help="the row's label (part turns)")
    args = parser.parse_args(argv)
    logs = Path(args.logs)
    if args.part != "turns":
        logs.mkdir(parents=True, exist_ok=True)
    start_time = time.monotonic()
    if args.part in ("modes", "all"):
        part_modes(args, logs)
    if args.part in ("cache", "all"):
        part_cache(args, logs)
    if args.part == "turns":
        part_turns(args)
    else:
        print(f"\n{time.monotonic() - start_time:.0f} s in all; server logs in {logs}/", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
