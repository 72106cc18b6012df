"""An approval gate: a person says yes or no before files are written or code runs."""

from __future__ import annotations

import difflib
import sys
import threading

from ..errors import ConfigError
from ..safetext import printable

PREVIEW_CHARS = 2400


def write_preview(path: str, old: str | None, new: str, limit: int = PREVIEW_CHARS - 200) -> str:
    """What an approver reads before a write: the path and size, then the
    new file's content (a new file) or a unified diff against the file it
    replaces, cut to ``limit`` characters with a note saying how much more."""
    size = len(new.encode("utf-8"))
    if old is None:
        head, body = f"{path} (new file, {size} bytes):", new
    elif old == new:
        head, body = f"{path} ({size} bytes, unchanged)", ""
    else:
        head = f"{path} ({size} bytes, replaces {len(old.encode('utf-8'))} bytes):"
        body = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "before", "after", n=2))
    if len(body) > limit:
        body = body[:limit] + f"\n[... {len(body) - limit} more characters not shown]"
    return f"{head}\n{body}" if body else head


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
            preview = printable(preview)  # no escape codes hide a line
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
