"""An approval gate: a person says yes or no before files are written or code runs."""

from __future__ import annotations

import sys
import threading

from .errors import ConfigError

PREVIEW_CHARS = 1200


class TerminalApprover:
    """Asks on the terminal before each write_file and run_python.

    Answers: y (yes, this once), n (no: the model gets an error), a (always:
    stop asking for this tool for the rest of the run). Calls from parallel
    turns wait for each other, so questions never interleave.
    """

    def __init__(self, stdin=None, stdout=None):
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        if not self.stdin.isatty():
            raise ConfigError("--approve needs a terminal to ask on; standard input is not one")
        self.always: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, action: str, detail: str) -> bool:
        with self._lock:
            if action in self.always:
                return True
            preview = detail if len(detail) <= PREVIEW_CHARS else detail[:PREVIEW_CHARS] + "\n[...]"
            self.stdout.write(f"\n--- approve {action}? ---\n{preview}\n[y]es / [n]o / [a]lways: ")
            self.stdout.flush()
            while True:
                answer = self.stdin.readline()
                if not answer:  # the terminal closed: refuse
                    return False
                answer = answer.strip().lower()
                if answer in ("y", "yes"):
                    return True
                if answer in ("n", "no"):
                    return False
                if answer in ("a", "always"):
                    self.always.add(action)
                    return True
                self.stdout.write("please answer y, n or a: ")
                self.stdout.flush()
