"""Chaos benchmark (run by hand, figures in the README): an unattended run
against a server that does everything servers do, and kill -9 at random
instants followed by --resume.

    python tests/bench_chaos.py                 # all three parts (about 4 minutes)
    python tests/bench_chaos.py --outage 30 --kills 5

1. faults: 12 rounds of 3 agents through the real ``azclaw`` command; the
   scripted server sends broken HTTP, bodies that are not JSON or nested
   10,000 deep, a lone surrogate, a 400-digit token count, context-length
   400s in four servers' wordings, empty and cut-off replies, and goes away
   for ``--outage`` seconds in the middle. Reports: exit code, rounds
   finished, turns without a message.
2. kills: a run of 30 rounds, SIGKILLed at random instants and resumed with
   --resume each time. Reports finished rounds run again per kill (goal at
   most 1: the round in progress) and memories stored twice (goal 0).
3. memory: peak resident memory of azclaw while the server sends a 50 MB
   reply (the client caps replies at 4 MB).

All traffic stays on 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from fakellm import FakeLLM, Reply, call, error, fault, overflow, text  # noqa: E402

from azclaw.memory import parse_entries  # noqa: E402

AZCLAW = [sys.executable, "-m", "azclaw"]
AGENTS = "architect,developer,reviewer"


def journal(folder: Path) -> list[dict]:
    [path] = list((folder / "logs").glob("*_journal.jsonl"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def faults(outage: float) -> dict:
    bad = [fault("bad_status_line"), fault("many_headers"), fault("broken_chunked"), fault("cut_body"),
           Reply(body="<html>502 Bad Gateway</html>"), Reply(body='{"choices": ' + "[" * 10000),
           Reply(body='{"choices": [{"message": {"content": "caf\\ud800 ok"}}], '
                      '"usage": {"prompt_tokens": ' + "9" * 400 + "}}"),
           overflow("llama.cpp"), overflow("vllm"), overflow("openai"), overflow("ollama"),
           Reply(text=""), Reply(text="<think>never finishes", finish_reason="length")]
    down = {"from": None}
    lock = threading.Lock()
    count = Counter()

    def responder(request):
        with lock:
            count["requests"] += 1
            n = count["requests"]
            if request.round == 6 and down["from"] is None:
                down["from"] = time.monotonic()
            if down["from"] and time.monotonic() - down["from"] < outage:
                return error(503)
        if n % 4 == 0:
            return bad[(n // 4) % len(bad)]
        if request.tool_results or n % 3:
            return text(f"{request.agent}: work of round {request.round}")
        return call("remember", {"text": f"decision {n}", "title": f"d{n}"})

    with tempfile.TemporaryDirectory() as tmp, FakeLLM(responder=responder) as fake:
        started = time.monotonic()
        proc = subprocess.run(AZCLAW + ["run", "--task", "chaos", "--agents", AGENTS, "--endpoint", fake.url,
                                        "--max-rounds", "12", "--quiet", "--no-stream"],
                              cwd=tmp, capture_output=True, text=True, timeout=outage + 600)
        events = journal(Path(tmp))
        turns = {(e["round"], e["agent"]): e for e in events if e["event"] == "turn"}
        return {"exit": proc.returncode, "error": proc.stderr.strip()[-300:],
                "rounds finished": sum(1 for e in events if e["event"] == "round_end"),
                "turns without a message": sum(1 for t in turns.values() if not t["text"]),
                "requests": count["requests"], "seconds": round(time.monotonic() - started, 1)}


def kills(n: int, rounds: int = 30, seed: int = 7) -> dict:
    rng = random.Random(seed)

    def responder(request):
        time.sleep(0.02)
        if request.tool_results:
            return text(f"{request.agent} done with round {request.round}")
        return call("remember", {"text": f"{request.agent} decided in round {request.round}",
                                 "title": f"r{request.round}"})

    redone, args = [], ["run", "--task", "kills", "--name", "k", "--agents", AGENTS, "--max-rounds", str(rounds),
                        "--quiet", "--no-stream"]
    with tempfile.TemporaryDirectory() as tmp, FakeLLM(responder=responder) as fake:
        folder = Path(tmp)
        command = AZCLAW + args + ["--endpoint", fake.url]
        for k in range(n):
            proc = subprocess.Popen(command + (["--resume"] if k else []), cwd=tmp,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 2.5))
            proc.kill()
            proc.wait()
            done = max((e["round"] for e in journal(folder) if e["event"] == "round_end"), default=0)
            before = len(fake.chats)
            resumed = subprocess.Popen(command + ["--resume"], cwd=tmp, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while len(fake.chats) == before and time.monotonic() < deadline and resumed.poll() is None:
                time.sleep(0.02)
            resumed.kill()
            resumed.wait()
            first = min((r.round for r in fake.chats[before:]), default=done + 1)
            redone.append(max(0, done + 1 - first))  # finished rounds asked again
            if done >= rounds:
                break
        final = subprocess.run(command + ["--resume"], cwd=tmp, capture_output=True, text=True, timeout=600)
        texts = [entry.text for path in (folder / "agents").rglob("remember/*.txt")
                 for entry in parse_entries(path.read_text())]
        twice = sum(c - 1 for c in Counter(texts).values() if c > 1)
        turns = Counter((e["round"], e["agent"]) for e in journal(folder) if e["event"] == "turn")
        return {"kills": len(redone), "finished rounds run again per kill": max(redone, default=0),
                "memories stored twice": twice, "final exit": final.returncode,
                "turns in the journal more than once": sum(1 for c in turns.values() if c > 1)}


def big_reply() -> dict:
    body = json.dumps({"choices": [{"message": {"content": "x" * (50 << 20)}}]})
    with tempfile.TemporaryDirectory() as tmp, FakeLLM(script=[Reply(body=body)] * 6) as fake:
        proc = subprocess.run(AZCLAW + ["run", "--task", "big", "--agents", "solo", "--endpoint", fake.url,
                                        "--max-rounds", "1", "--quiet", "--no-stream", "--max-failed-rounds", "1"],
                              cwd=tmp, capture_output=True, text=True, timeout=300)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"exit": proc.returncode, "peak RSS of azclaw, MB": round(peak), "said": proc.stderr.strip()[-160:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=90.0, help="seconds the server is down (default 90)")
    parser.add_argument("--kills", type=int, default=10, help="kill -9 and resume this many times (default 10)")
    opts = parser.parse_args()
    print("memory:", json.dumps(big_reply()), flush=True)  # first: getrusage keeps the largest child
    print("faults:", json.dumps(faults(opts.outage)), flush=True)
    print("kills:", json.dumps(kills(opts.kills)), flush=True)


if __name__ == "__main__":
    main()
