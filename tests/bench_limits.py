"""Limits benchmark (issue 21), run by hand, never by pytest:

    python tests/bench_limits.py
    python tests/bench_limits.py --repeat 5

Against local scripted OpenAI-compatible servers (tests/fakellm.py), with
the default thresholds, it measures:

* how many turns an agent that gives empty replies, an agent that calls no
  tool and an agent going in circles (the same read_file, the same
  message) take before they are named, nudged and (with --loop-limit 2)
  made to sit out;
* how many rounds a team that makes nothing new takes to be warned, and
  stopped with --stop-on-no-progress 8;
* how far a run goes past each budget: tokens, time and money (the budget
  is checked after every turn, so a run can go one turn over: the figures
  say how much, in tokens, seconds and dollars, next to one turn's cost);
* whether a working team of three (tools used, files and memories made,
  every message new) trips anything in 20 rounds of each shipped topic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakellm import FakeLLM, call, text  # noqa: E402
from helpers import journal, words, working_team  # noqa: E402

from azclaw import Agent, Orchestrator, Topic  # noqa: E402
from azclaw.cli import PACKAGE_TOPICS  # noqa: E402

_SCRATCH = tempfile.TemporaryDirectory(prefix="azclaw-limits-")
WATCHED = ("silent", "no_tools", "loop", "no_progress", "skip")


def folder() -> Path:
    return Path(tempfile.mkdtemp(dir=_SCRATCH.name))


def run(responder, names=("subject", "architect"), rounds=12, writers=(), topic=None, delay=0.0, tokens=None,
        **options) -> tuple[Orchestrator, list[dict], FakeLLM]:
    where = folder()
    with FakeLLM(responder=responder, delay=delay, tokens=tokens) as fake:
        agents = [Agent(n, endpoint=fake.url, can_write=n in writers, retries=0) for n in names]
        orch = Orchestrator(agents, topic, where / "output", where / "logs", None, None, where / "agents",
                            verbose=False, **options)
        (where / "output").mkdir(parents=True, exist_ok=True)
        (where / "output" / "notes.txt").write_text("the plan\n")
        orch.run(max_rounds=rounds)
        return orch, journal(orch.journal_path), fake


def others(request):
    return working_team(request)


def first(lines, what, agent="subject"):
    found = [e for e in lines if e["event"] == "warning" and e["what"] == what and (not agent or e["agent"] == agent)]
    return found[0]["round"] if found else None


def turns_until_caught() -> list[tuple[str, str]]:
    rows = []
    silent = lambda r: text("") if r.agent == "subject" else others(r)  # noqa: E731
    _, lines, _ = run(silent)
    rows.append(("an agent that gives only empty replies: named in a warning", f"turn {first(lines, 'silent')}"))

    talker = lambda r: text(words(f"t{r.round}")) if r.agent == "subject" else others(r)  # noqa: E731
    _, lines, _ = run(talker)
    rows.append(("an agent that calls no tool while tools are offered: named", f"turn {first(lines, 'no_tools')}"))

    def circling(r):
        if r.agent != "subject":
            return others(r)
        if r.tool_results or not r.offers_tools:
            return text("I read notes.txt again. Nothing changed; I will read it once more.")
        return call("read_file", {"path": "notes.txt"})
    _, lines, fake = run(circling, loop_limit=2)
    nudged = min((r.round for r in fake.chats_of("subject") if "Note from the run" in r.user), default=None)
    sat_out = first(lines, "skip")
    rows.append(("an agent going in circles (same read_file, same message): warned",
                 f"turn {first(lines, 'loop')} (the first of its 3 repeats is turn 2)"))
    rows.append(("  ... nudged (\"Note from the run\" in its prompt)", f"turn {nudged}"))
    rows.append(("  ... sits out 3 rounds (--loop-limit 2)", f"from round {sat_out}"))

    def stamps(r):
        if r.agent != "subject":
            return others(r)
        if r.tool_results or not r.offers_tools:
            return text(words(f"s{r.round}"))
        return call("remember", {"text": f"15:26:{r.round:02d}", "title": f"1526{r.round:02d}"})
    _, lines, _ = run(stamps)
    rows.append(("an agent storing timestamps as memory titles: warned and nudged", f"turn {first(lines, 'loop')}"))

    idle = lambda r: text(words(f"{r.agent}{r.round}"))  # noqa: E731
    orch, lines, _ = run(idle, rounds=20, no_tool_turns=0, stop_on_no_progress=8)
    rows.append(("a team that makes nothing new: warned", f"round {first(lines, 'no_progress', '')}"))
    rows.append(("  ... stopped (--stop-on-no-progress 8)", f"after round {orch.last_round}: {orch.ending.reason}"))
    return rows


def overshoot(repeat: int) -> list[tuple[str, str]]:
    rows = []
    talk = lambda r: text(words(f"{r.agent}{r.round}"))  # noqa: E731
    over = []
    for budget in (1000, 2500, 10_000):
        orch, _, _ = run(talk, rounds=500, tokens=(300, 40), budget_tokens=budget, no_tool_turns=0)
        over.append(orch.ending.figures["used"] - budget)
    rows.append(("tokens past --budget-tokens (1,000 / 2,500 / 10,000; one turn: 340)",
                 " / ".join(f"{o:,}" for o in over)))
    over = []
    for price, budget in (((2.0, 8.0), 0.01), ((3.0, 15.0), 0.05)):
        orch, _, _ = run(talk, rounds=500, tokens=(300, 40), price=price, budget_money=budget, no_tool_turns=0)
        turn = (300 * price[0] + 40 * price[1]) / 1e6
        over.append(f"${orch.ending.figures['used'] - budget:.5f} (one turn: ${turn:.5f})")
    rows.append(("dollars past --budget-money at two --price pairs", " / ".join(over)))
    for delay in (0.05, 0.5):
        seconds = []
        for _ in range(repeat):
            orch, _, _ = run(talk, names=("subject",), rounds=10_000, delay=delay, max_time="3s", no_tool_turns=0)
            seconds.append(orch.ending.figures["used"] - 3.0)
        rows.append((f"seconds past --max-time 3s, turns of {delay:g} s (median of {repeat})",
                     f"{statistics.median(seconds):.2f} (at most {max(seconds):.2f})"))
    return rows


def shipped_topics() -> list[tuple[str, str]]:
    rows = []
    for path in sorted(PACKAGE_TOPICS.glob("*.json")):
        started = time.monotonic()
        orch, lines, fake = run(working_team, names=("architect", "developer", "reviewer"), rounds=20,
                                writers=("developer",), topic=Topic.load(path))
        tripped = [e for e in lines if e["event"] == "warning" and e["what"] in WATCHED]
        nudges = sum("Note from the run" in r.user for r in fake.chats)
        rows.append((f"20 rounds of {path.stem} by a working team: warnings, nudges, ending",
                     f"{len(tripped)}, {nudges}, {orch.ending.reason} ({time.monotonic() - started:.0f} s)"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per time measurement (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    rows = turns_until_caught() + overshoot(args.repeat) + shipped_topics()
    if args.json:
        print(json.dumps(dict(rows), indent=1))
        return 0
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
