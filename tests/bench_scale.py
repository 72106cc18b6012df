"""Many agents on many servers, measured by hand (never by pytest)::

    python tests/bench_scale.py                 # both parts
    python tests/bench_scale.py --part overhead --agents 50 --rounds 100
    python tests/bench_scale.py --part servers --rounds 3

1. ``servers``: 12 agents on 2 local model servers (the bundled model, with
   llama-cpp-python's prompt cache on), each way of spreading them: azclaw's
   sticky pool (``--endpoints``), round-robin (every request to the next
   server, as a plain load balancer does), and, where it is installed,
   sglang-router with ``--policy manual`` keyed on azclaw's routing key. Per
   way: the prompt tokens the servers took from their cache, seconds per
   round, requests per server.
2. ``overhead``: 50 agents x 100 rounds against a scripted server in its own
   process, with no latency of its own: the CPU time azclaw's process spends
   per request (the orchestrator, the client, the journal, the memory index),
   plain and streamed, against a bare urllib client sending the same bodies
   (and reading the stream) - CPU the model servers do not get. ``--profile``
   prints where azclaw's time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fakellm import FakeLLM  # noqa: E402

from azclaw import Agent, Orchestrator  # noqa: E402

_SCRATCH = tempfile.TemporaryDirectory(prefix="azclaw-bench-scale-")


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(dir=_SCRATCH.name))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- 1. sticky against spread, on two real servers -----------------------------------------

def one_way(name: str, endpoint, agents: int, rounds: int, max_tokens: int) -> dict:
    os.chdir(_scratch())
    team = [Agent(f"agent{i:02d}", endpoint=endpoint, tools=[], tool_mode="native", stream=False,
                  max_tokens=max_tokens, max_outage=900) for i in range(agents)]
    orch = Orchestrator(team, parallel=True, context_budget=3000, verbose=False)
    orch.set_task("Plan a small ledger service in Python: its modules, its data, its tests.")
    start = time.monotonic()
    stats = orch.run(max_rounds=rounds)
    seconds = time.monotonic() - start
    placed = {}
    for session in orch.sessions.values():
        if session.client.pool is not None:
            placed = dict(session.client.pool.sent)
            break
    return {"way": name, "prompt": stats.prompt_tokens, "cached": sum(a.cached_tokens for a in stats.agents.values()),
            "round_s": seconds / rounds, "sent": placed}


def servers_part(agents: int, rounds: int, max_tokens: int) -> None:
    from azclaw.client.pool import Pool
    from azclaw.local.server import LocalServer
    print(f"\n{agents} agents on 2 local servers (the bundled model, llama-cpp-python --cache True), "
          f"{rounds} rounds, parallel, one request per turn (no tools), max_tokens {max_tokens}; "
          "two new servers for each way, so no way finds another's prompts in their caches:")

    def pooled(a, b):
        return one_way("sticky pool (--endpoints)", Pool([a.endpoint, b.endpoint]), agents, rounds, max_tokens)

    def round_robin(a, b):
        from relay import Relay
        balancer = Relay([a.base, b.base], timeout=900)  # a plain load balancer: each request to the next server
        try:
            result = one_way("round-robin balancer", balancer.base, agents, rounds, max_tokens)
            result["sent"] = dict(Counter(p.target for p in balancer.chats()))
            return result
        finally:
            balancer.stop()

    def router(a, b):
        from relay import Relay
        from test_pool import Router
        relays = [Relay(a.base), Relay(b.base)]
        gateway = Router([r.base for r in relays], _scratch() / "router.log")
        try:
            result = one_way("sglang-router manual + key", gateway.url, agents, rounds, max_tokens)
            result["sent"] = {r.base: len(r.chats()) for r in relays}
            return result
        finally:
            gateway.stop()
            for r in relays:
                r.stop()

    ways = [pooled, round_robin] + ([router] if importlib.util.find_spec("sglang_router") is not None else [])
    results = []
    for way in ways:
        args = ("--cache", "True")
        with LocalServer(max_tokens=max_tokens, server_args=args) as a, \
                LocalServer(max_tokens=max_tokens, server_args=args) as b:
            results.append(way(a, b))
    print(f"  {'way':<28}{'prompt tok':>11}{'from cache':>12}{'share':>7}{'s/round':>9}   requests per server")
    for r in results:
        share = r["cached"] / r["prompt"] if r["prompt"] else 0
        print(f"  {r['way']:<28}{r['prompt']:>11,}{r['cached']:>12,}{share:>7.0%}{r['round_s']:>9.1f}   "
              f"{sorted(r['sent'].values())}")


# -- 2. the orchestrator's own CPU per request ------------------------------------------------

def scripted_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "fakellm.py"), "--port", str(port)],
                            stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # "listening on ..."
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


def sample_bodies(agents: int) -> list[dict]:
    """What azclaw sends in a round of this team (recorded by an in-process server)."""
    os.chdir(_scratch())
    with FakeLLM() as fake:
        Orchestrator([Agent(f"agent{i:02d}", endpoint=fake.url) for i in range(agents)], verbose=False,
                     check_health=False).run(max_rounds=2)
        return [{k: v for k, v in r.body.items() if k not in ("stream", "stream_options")}
                for r in fake.chats if r.round == 2]


def bare(url: str, bodies: list[dict], n: int, stream: bool) -> tuple[float, float]:
    """A bare urllib client (it encodes each request, as any client must):
    (wall, CPU) seconds for ``n`` requests."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        body = json.dumps(dict(bodies[i % len(bodies)], stream=stream)).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as resp:
            if stream:
                for line in resp:
                    if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                        json.loads(line[6:])
            else:
                json.loads(resp.read())
    return time.perf_counter() - wall, time.process_time() - cpu


def run_team(url: str, agents: int, rounds: int, stream: bool, profile: bool, parallel: bool = False):
    os.chdir(_scratch())
    team = [Agent(f"agent{i:02d}", endpoint=url, stream=stream) for i in range(agents)]
    orch = Orchestrator(team, verbose=False, check_health=False, parallel=parallel)
    orch.set_task("Plan a small ledger service in Python.")
    profiler = cProfile.Profile(time.process_time) if profile else None  # CPU, not waits
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    stats = orch.run(max_rounds=rounds)
    if profiler:
        profiler.disable()
    requests = sum(a.requests for a in stats.agents.values())
    return time.perf_counter() - wall, time.process_time() - cpu, requests, profiler


def overhead_part(agents: int, rounds: int, profile: bool) -> None:
    print(f"\n{agents} agents x {rounds} rounds against a scripted server in its own process (no latency), "
          "sequential; per request:")
    bodies = sample_bodies(agents)
    proc, url = scripted_server()
    try:
        for stream in (False, True):
            wall, cpu, n, profiler = run_team(url, agents, rounds, stream, profile)
            bare_wall, bare_cpu = bare(url, bodies, n, stream)
            what = "streamed" if stream else "plain"
            print(f"  {what:<9} azclaw {cpu / n * 1000:5.2f} ms CPU ({wall / n * 1000:5.2f} ms wall), bare urllib "
                  f"{bare_cpu / n * 1000:5.2f} ms CPU ({bare_wall / n * 1000:5.2f} ms wall): azclaw's own "
                  f"{(cpu - bare_cpu) / n * 1000:5.2f} ms CPU per request ({n} requests)")
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        wall, cpu, n, _ = run_team(url, agents, max(1, rounds // 5), True, False, parallel=True)
        print(f"  parallel, streamed: {cpu / n * 1000:5.2f} ms CPU, {wall / n * 1000:5.2f} ms wall per request "
              f"({n} requests)")
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("servers", "overhead", "all"), default="all")
    parser.add_argument("--agents", type=int, help="default 12 (servers), 50 (overhead)")
    parser.add_argument("--rounds", type=int, help="default 3 (servers), 100 (overhead)")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--profile", action="store_true", help="where azclaw's time goes (overhead)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    if args.part in ("overhead", "all"):
        overhead_part(args.agents or 50, args.rounds or 100, args.profile)
    if args.part in ("servers", "all"):
        servers_part(args.agents or 12, args.rounds or 3, args.max_tokens)


if __name__ == "__main__":
    main()
