"""--git cost benchmark, run by hand, never by pytest:

    python tests/bench_gitlog.py                 # 10 and 1,000 files, 10 rounds each
    python tests/bench_gitlog.py --files 5000 --rounds 20

For an output folder of N files (about 2 KB each, in 20 folders): the first
commit, then per round the median time of a round that changed nothing
(the folder is read, nothing committed) and of a round that changed one file.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from azclaw.gitlog import GitLog
from azclaw.options import RunFolder


def measure(files: int, rounds: int, root: Path) -> str:
    folder = RunFolder.under(root)
    folder.output.mkdir(parents=True)
    folder.logs.mkdir()
    for i in range(files):
        package = folder.output / f"pkg{i % 20}"
        package.mkdir(exist_ok=True)
        (package / f"m{i}.py").write_text(f"x = {i}\n" * 300)
    log = GitLog.open(folder, "bench")
    start = time.perf_counter()
    log.commit(1, ())
    first = time.perf_counter() - start
    unchanged, one = [], []
    for n in range(rounds):
        start = time.perf_counter()
        assert log.commit(2 + n, ()) is None
        unchanged.append(time.perf_counter() - start)
        (folder.output / "pkg0" / "m0.py").write_text(f"changed {n}\n")
        start = time.perf_counter()
        assert log.commit(2 + n, ()) is not None
        one.append(time.perf_counter() - start)
    size = sum(p.stat().st_size for p in folder.output.rglob("*.py")) / 2**20
    return (f"{files} files ({size:.1f} MB): first commit {first * 1000:.0f} ms, a round that changed nothing "
            f"{statistics.median(unchanged) * 1000:.0f} ms, a round that changed one file "
            f"{statistics.median(one) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, action="append", help="files in the output folder (repeatable)")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    for files in args.files or [10, 1000]:
        with tempfile.TemporaryDirectory() as tmp:
            print(measure(files, args.rounds, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
