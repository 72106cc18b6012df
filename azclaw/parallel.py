"""Running the turns of a round at the same time (``parallel=True``)."""

from __future__ import annotations

import threading


def in_threads(jobs: list) -> list:
    """Run ``jobs`` at once and return their results in order. Daemon
    threads, so a second Ctrl+C can end the process without waiting for
    requests still in flight."""
    results: list = [None] * len(jobs)
    failures: list = [None] * len(jobs)

    def work(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # re-raised in the caller's thread
            failures[i] = exc

    threads = [threading.Thread(target=work, args=(i,), daemon=True, name=f"azclaw-turn-{i}")
               for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for failure in failures:
        if failure is not None:
            raise failure
    return results
