"""Speed benchmark, run by hand, never by pytest:

    python tests/bench_speed.py            # full: 200 rounds
    python tests/bench_speed.py --rounds 50

Against local scripted OpenAI-compatible servers (tests/fakellm.py) it
measures: request size per round (flat context), the system prompt's size,
the prefix shared by consecutive system prompts, the orchestrator's overhead
per turn against a bare urllib client, and parallel against sequential
rounds. Prompt tokens are the server's count (the fake counts 1 token per 4
characters of the JSON messages).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakellm import FakeLLM, Reply, calls, text  # noqa: E402

from azclaw import Agent, Orchestrator, Topic  # noqa: E402
from azclaw.client import LLMClient  # noqa: E402

WORDS = ("schema database route handler token cache queue retry index migration account balance ledger "
         "customer invoice session login audit report batch parser record field decimal rounding").split()
_ROUND = re.compile(r"Current round: (\d+) of")


_SCRATCH = tempfile.TemporaryDirectory(prefix="azclaw-bench-")  # removed when the script ends


def _scratch() -> Path:
    """A new empty working folder for one measurement."""
    return Path(tempfile.mkdtemp(dir=_SCRATCH.name))


def topic(rounds: int) -> Topic:
    third = rounds // 3
    return Topic.from_dict({
        "title": "Ledger service", "system_context": "You build a small ledger service in Python. " * 6,
        "initial_prompt": "Start by designing the ledger service.",
        "phases": [{"name": "Design", "rounds": [1, third], "focus": "Decide modules and schema.",
                    "source_files": ["spec/ledger.md"]},
                   {"name": "Build", "rounds": [third + 1, 2 * third], "focus": "Write the modules."},
                   {"name": "Review", "rounds": [2 * third + 1, rounds], "focus": "Test and fix."}],
        "agent_roles": {"architect": "Own the design.", "developer": "Write the code.", "reviewer": "Review it."},
    }, name="bench")


_turns = iter(range(10**9))


def busy_agent(request) -> Reply:
    """Each turn: recall words + remember a decision, then read the index, then a long message."""
    rng = random.Random(next(_turns))
    steps = sum(1 for m in request.messages if m["role"] == "assistant")
    if steps == 0:
        words = " ".join(rng.sample(WORDS, 3))
        note = " ".join(rng.choice(WORDS) for _ in range(60))
        return calls(("recall", {"query": words}), ("remember", {"text": note, "title": f"{words}-{rng.randrange(10**9)}"}))
    if steps == 1:
        return calls(("recall", {"query": ""}))
    return text(" ".join(rng.choice(WORDS) for _ in range(200)))


def flat_context(rounds: int) -> dict:
    os.chdir(_scratch())
    with FakeLLM(responder=busy_agent) as fake:
        team = [Agent("architect", endpoint=fake.url), Agent("developer", endpoint=fake.url, can_write=True),
                Agent("reviewer", endpoint=fake.url)]
        orch = Orchestrator(team, topic=topic(rounds), verbose=False)
        orch.run(max_rounds=rounds)
        requests = list(fake.chats)
    per = {}  # (agent, round) -> (max chars, max prompt tokens)
    systems: dict[str, list[tuple[int, str]]] = {}
    for r in requests:
        system = r.messages[0]["content"]
        round_no = int(_ROUND.search(system).group(1))
        tokens = sum(len(json.dumps(m)) for m in r.messages) // 4
        chars, toks = per.get((r.agent, round_no), (0, 0))
        per[(r.agent, round_no)] = (max(chars, r.size), max(toks, tokens))
        if not systems.get(r.agent) or systems[r.agent][-1][0] != round_no:
            systems.setdefault(r.agent, []).append((round_no, system))
    rows = []
    for agent in ("architect", "developer", "reviewer"):
        c10, t10 = per[(agent, 10)]
        cl, tl = per[(agent, rounds)]
        shares = []
        t = topic(rounds)
        for (ra, a), (rb, b) in zip(systems[agent], systems[agent][1:]):
            if t.phase_for(ra) is t.phase_for(rb):
                shares.append(len(os.path.commonprefix([a, b])) / len(a))
        system_tokens = max(len(s) for _, s in systems[agent]) // 4
        rows.append((agent, c10, cl, cl / c10, t10, tl, tl / t10, system_tokens, min(shares), statistics.mean(shares)))
    memories = sum(orch.memory.counts().values())
    return {"rows": rows, "memories": memories, "requests": len(requests)}


def overhead(rounds: int) -> dict:
    """Time between a reply arriving and the next request leaving, in azclaw's
    process (no tools), against a bare urllib loop replaying the same bodies."""
    os.chdir(_scratch())
    marks: list[tuple[float, float]] = []
    original = LLMClient._exchange

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            marks.append((start, time.perf_counter()))

    LLMClient._exchange = timed
    try:
        with FakeLLM(default="ok " * 50) as fake:
            team = [Agent(n, endpoint=fake.url) for n in ("architect", "developer", "reviewer")]
            Orchestrator(team, verbose=False).run(max_rounds=rounds)
            # the bare loop asks for plain replies (it has no SSE reader)
            bodies = [json.dumps({k: v for k, v in r.body.items() if k not in ("stream", "stream_options")}).encode()
                      for r in fake.chats]
    finally:
        LLMClient._exchange = original
    ours = [(b[0] - a[1]) * 1000 for a, b in zip(marks, marks[1:])]
    bare_marks = []
    with FakeLLM(default="ok " * 50) as bare:
        for body in bodies:
            start = time.perf_counter()
            req = urllib.request.Request(bare.url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req) as resp:
                json.loads(resp.read())
            bare_marks.append((start, time.perf_counter()))
    theirs = [(b[0] - a[1]) * 1000 for a, b in zip(bare_marks, bare_marks[1:])]
    return {"azclaw_ms": statistics.median(ours), "azclaw_p95": sorted(ours)[int(len(ours) * 0.95)],
            "bare_ms": statistics.median(theirs), "turns": len(marks)}


def parallel(rounds: int = 5, delay: float = 0.3) -> dict:
    out = {}
    for mode in (False, True):
        os.chdir(_scratch())
        servers = [FakeLLM(delay=delay).start() for _ in range(3)]
        try:
            team = [Agent(n, endpoint=s.url) for n, s in zip(("architect", "developer", "reviewer"), servers)]
            orch = Orchestrator(team, parallel=mode, verbose=False, check_health=False)
            start = time.monotonic()
            orch.run(max_rounds=rounds)
            out["parallel" if mode else "sequential"] = (time.monotonic() - start) / rounds
        finally:
            for s in servers:
                s.stop()
    out["turn"] = delay
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    flat = flat_context(args.rounds)
    print(f"\nFlat context: {args.rounds} rounds, 3 agents, {flat['requests']} requests, "
          f"{flat['memories']} memories at the end")
    print(f"{'agent':<11}{'chars r10':>10}{'chars r' + str(args.rounds):>11}{'ratio':>7}"
          f"{'tok r10':>9}{'tok r' + str(args.rounds):>9}{'ratio':>7}{'system tok':>12}{'prefix min':>12}{'mean':>7}")
    for a, c10, cl, cr, t10, tl, tr, st, pmin, pmean in flat["rows"]:
        print(f"{a:<11}{c10:>10}{cl:>11}{cr:>7.2f}{t10:>9}{tl:>9}{tr:>7.2f}{st:>12}{pmin:>12.1%}{pmean:>7.1%}")
    ov = overhead(min(args.rounds, 100))
    print(f"\nOverhead per turn ({ov['turns']} turns, no tools): time from a reply to the next request, "
          f"median azclaw {ov['azclaw_ms']:.2f} ms (p95 {ov['azclaw_p95']:.2f} ms), "
          f"bare urllib {ov['bare_ms']:.2f} ms, difference {ov['azclaw_ms'] - ov['bare_ms']:.2f} ms")
    par = parallel()
    print(f"\nParallel: 3 agents on 3 endpoints, {par['turn'] * 1000:.0f} ms per reply: round takes "
          f"sequential {par['sequential']:.2f} s ({par['sequential'] / par['turn']:.2f}x a turn), "
          f"parallel {par['parallel']:.2f} s ({par['parallel'] / par['turn']:.2f}x a turn)")


if __name__ == "__main__":
    main()
