"""Sandbox cost benchmark, run by hand, never by pytest:

    python tests/bench_sandbox.py            # 30 calls per variant
    python tests/bench_sandbox.py --calls 100

Wall time of one run_python call (``print(1)`` and ``import json, csv``),
median and 90th percentile, for: a bare ``python -I -c`` subprocess (what
run_python did before the sandbox), then the launcher with each layer added
in turn, up to the full sandbox. Also the self-test's time and the level.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from azclaw.tools import sandbox
from azclaw.tools.confine import probe_sandbox, runner


def bare(code: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-I", "-c", code], cwd=cwd, capture_output=True, timeout=30)


def variants(cwd: Path):
    level = probe_sandbox()
    names = tuple(n for n in level.namespaces if n != "user")
    yield "bare python -I -c (before)", lambda code: bare(code, cwd)
    yield "launcher only", lambda code: runner.run(code, cwd, confine=False, namespaces=(), use_cgroup=False)
    yield "+ cgroup", lambda code: runner.run(code, cwd, confine=False, namespaces=(), use_cgroup=True)
    yield "+ namespaces", lambda code: runner.run(code, cwd, confine=False, namespaces=names, use_cgroup=True)
    yield "+ landlock, seccomp, caps (full)", lambda code: runner.run(code, cwd, namespaces=names, use_cgroup=True)
    yield "sandbox.run_python (full, as tools call it)", lambda code: sandbox.run_python(code, cwd)
    if probe_sandbox("bwrap").confined:
        yield "sandbox.run_python, --python-sandbox bwrap", lambda code: sandbox.run_python(code, cwd, mode="bwrap")


def measure(run, code: str, calls: int) -> tuple[float, float]:
    run(code)  # warm the page cache
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(code)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    opts = parser.parse_args()
    start = time.perf_counter()
    level = probe_sandbox(refresh=True)
    print(f"self-test: {(time.perf_counter() - start) * 1000:.0f} ms -> {level.text} (confined: {level.confined})")
    with tempfile.TemporaryDirectory(prefix="azclaw-bench-") as tmp:
        print(f"{'variant':<46} {'print(1) median/p90 ms':>24} {'import json,csv':>18}")
        for name, run in variants(Path(tmp)):
            small = measure(run, "print(1)", opts.calls)
            imports = measure(run, "import json, csv; print(2)", opts.calls)
            print(f"{name:<46} {small[0]:>14.0f} / {small[1]:<7.0f} {imports[0]:>8.0f} / {imports[1]:<7.0f}")


if __name__ == "__main__":
    main()
