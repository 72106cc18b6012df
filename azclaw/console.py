"""Where a run says what it is doing: its log file, the console, and the
``azclaw`` logger.

The library configures no logging of its own (the ``azclaw`` logger has
only a NullHandler). A run writes its progress lines to
``<log_dir>/<topic>.log`` and, when verbose, to the console; each line also
goes to the ``azclaw`` logger at INFO for programs that configure logging.
Warnings that other azclaw modules log while the run goes on (a retry, an
endpoint down) reach the same file and console through a handler that the
run adds and removes; the logger's level and propagation stay untouched.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from .files import open_append
from .safetext import continued, indented, one_line, printable

log = logging.getLogger("azclaw")
_OWN = "azclaw_progress"  # marks the records a RunConsole sent itself


class RunConsole:
    """The progress lines of one run: its log file, the console, the azclaw logger."""

    def __init__(self, log_file: Path, console: bool | TextIO = True):
        self.log_file = Path(log_file)
        self._file = open_append(self.log_file, "run log")  # never through a link, never blocking on a pipe
        self._console = (sys.stderr if console is True else console) or None
        self._lock = threading.Lock()
        self._status = False
        self._handler = _Forward(self)
        log.addHandler(self._handler)

    @property
    def live(self) -> bool:
        """A terminal that can take a status line that rewrites itself."""
        try:
            return self._console is not None and self._console.isatty()
        except (AttributeError, ValueError):
            return False

    def follow(self, agent: str, round_no: int, last: int):
        """A callback for a streamed reply (``LLMClient.chat(on_delta=...)``)
        that keeps one status line current on a terminal: the agent, its
        time, tokens so far and their rate, the tool it is writing a call
        for. None when the console is not a terminal (a log, CI): plain
        lines only, one per finished turn."""
        if not self.live:
            return None

        def show(progress) -> None:
            rate = progress.tokens / progress.seconds if progress.seconds else 0.0
            doing = f", calling {progress.tool}" if getattr(progress, "tool", "") else (
                ", thinking" if getattr(progress, "thinking", False) else "")
            self.status(f"[round {round_no}/{last}] {agent}: {progress.seconds:.0f}s, {progress.tokens} tok, "
                        f"{rate:.1f} tok/s{doing}")
        return show

    def status(self, text: str) -> None:
        """Rewrite the live status line (terminals only)."""
        with self._lock:
            if self._console is not None and self.live:
                try:
                    self._console.write("\r\x1b[K" + one_line(text, 200))
                    self._console.flush()
                    self._status = True
                except (OSError, ValueError):
                    self._console = None

    def info(self, message: str, *args) -> None:
        self._emit("INFO", message, args)

    def warning(self, message: str, *args) -> None:
        self._emit("WARNING", message, args)

    def _emit(self, level: str, message: str, args: tuple) -> None:
        text = printable(message % args if args else message)
        log.log(logging.getLevelName(level), text, extra={_OWN: True})
        self.write(level, text)

    def write(self, level: str, text: str, detail: str = "") -> None:
        """A line for the file and the console; ``detail`` (a traceback) for the file only.
        What a model or a server wrote reaches neither raw: escapes are written
        out, and lines after the first are indented (no forged progress line)."""
        text = continued(text)
        detail = indented(detail.rstrip()) if detail else ""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self._lock:
            if self._file.closed:
                return
            try:
                self._file.write(f"{stamp} {level} {text}\n" + (detail + "\n" if detail else ""))
                self._file.flush()
            except OSError:
                pass  # a full disk must not end the run here; the journal says what happened
            if self._console is not None:
                try:
                    if self._status:  # a plain line replaces the status line
                        self._console.write("\r\x1b[K")
                        self._status = False
                    print(text if level == "INFO" else f"{level.lower()}: {text}", file=self._console, flush=True)
                except (OSError, ValueError):
                    self._console = None  # the terminal went away: keep running, keep the file

    def close(self) -> None:
        log.removeHandler(self._handler)
        with self._lock:
            self._file.close()


class _Forward(logging.Handler):
    """Sends what other azclaw modules log (WARNING and up, unless the
    program lowered the logger's level) to the run's file and console."""

    def __init__(self, progress: RunConsole):
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, _OWN, False):
            return
        try:
            detail = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
            self.progress.write(record.levelname, record.getMessage(), detail)
        except Exception:  # logging must never take a run down
            self.handleError(record)
