"""Running the turns of a round at the same time (``parallel=True``)."""

from __future__ import annotations

import threading
from typing import Callable


def in_threads(jobs: list, limit: int = 0, stop: Callable[[], bool] | None = None) -> list:
    """Run ``jobs`` at once, at most ``limit`` at a time (0: all), and return
    their results in order. Once ``stop()`` is true no further job starts
    (its result is None). Daemon threads, so a second Ctrl+C can end the
    process without waiting for requests still in flight."""
    results: list = [None] * len(jobs)
    failures: list = [None] * len(jobs)
    lock = threading.Lock()
    queue = iter(range(len(jobs)))

    def work() -> None:
        while True:
            with lock:
                i = next(queue, None)
            if i is None or (stop is not None and stop()):
                return
            try:
                results[i] = jobs[i]()
            except BaseException as exc:  # re-raised in the caller's thread
                failures[i] = exc

    workers = len(jobs) if not limit else min(limit, len(jobs))
    threads = [threading.Thread(target=work, daemon=True, name=f"azclaw-turn-{n}") for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for failure in failures:
        if failure is not None:
            raise failure
    return results
