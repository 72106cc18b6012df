"""Where a run says what it is doing: its log file, the console, and the
``azclaw`` logger. ``RunConsole`` is a subscriber of the run's events: the
wording of every progress line is here, not in the loop.

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

from .events import (Event, FinishChecked, Notice, ProbeAnswered, ReplyProgress, RoundFailed, RoundProgress,
                     RunFinished, RunStarted, RunWarning, ToolModeChanged, TurnFinished)
from .files import open_append
from .progress import describe
from .safetext import continued, indented, one_line, printable

log = logging.getLogger("azclaw")
_OWN = "azclaw_progress"  # marks the records a RunConsole sent itself


class RunConsole:
    """The progress lines of one run: its log file, the console, the azclaw logger."""

    def __init__(self, log_file: Path, console: bool | TextIO = True):
        self.log_file = Path(log_file)
        self._file = open_append(self.log_file, "run log")  # never through a link, never blocking on a pipe
        self._console = (sys.stderr if console is True else console) or None
        self._lock = threading.RLock()  # a signal's notice may come while a line is written
        self._status = False
        self._last = 0  # the run's last round, for "[round 3/10]"
        self._handler = _Forward(self)
        log.addHandler(self._handler)

    # -- the run's events ----------------------------------------------------------
    def __call__(self, event: Event) -> None:
        if isinstance(event, ReplyProgress):
            self._progress(event)
        elif isinstance(event, TurnFinished):
            self._turn(event.turn)
        elif isinstance(event, ProbeAnswered):
            t = event.turn
            self.info("[probe after round %d] %s: %s%s", t.round, t.agent, t.text[:200],
                      "" if event.correct is None else f" ({'correct' if event.correct else 'WRONG'})")
        elif isinstance(event, RunStarted):
            self._last = event.last_round
            context = "" if event.context == "memory" else f", context {event.context}"
            self.info("azclaw run %r: rounds %d-%d, agents %s%s; run_python: %s", event.title, event.first_round,
                      event.last_round, ", ".join(event.agents), context, event.sandbox)
        elif isinstance(event, ToolModeChanged):
            self.warning("%s: tool calls now go %s: %s", event.agent, _MODES.get(event.mode, event.mode),
                         event.reason)
        elif isinstance(event, RoundProgress):
            self.info("[round %d/%d] %s", event.round, self._last, describe(event))
        elif isinstance(event, FinishChecked):
            (self.info if event.ok else self.warning)(
                "finish check after round %d: `%s` %s (%s)%s", event.round, event.command,
                "passed" if event.ok else "failed", event.status,
                "" if event.ok else ": " + (event.output.strip().splitlines() or [""])[-1][:200])
        elif isinstance(event, RoundFailed):
            self.warning("round %d: every turn failed (%s); it runs again", event.round, event.error)
        elif isinstance(event, RunWarning):
            self.warning("%s", event.message)
        elif isinstance(event, Notice):
            (self.warning if event.level == "warning" else self.info)("%s", event.message)
        elif isinstance(event, RunFinished):
            if event.ending.reason not in ("max_rounds", "done") and not event.summary:
                self.info("run ended after round %d: %s", event.round, event.ending)
            if event.checkpoint:
                self.info("checkpoint: %s", event.checkpoint)
            if event.summary:  # last: what a person reads first (it says why the run ended)
                for line in event.summary.splitlines():  # azclaw's own lines, each made printable on its own
                    self.info("%s", line)

    def _turn(self, turn) -> None:
        if turn.dropped:
            self.info("%s: %d earlier messages left out to fit the context budget", turn.agent, turn.dropped)
        tools = ", ".join(f"{n}x{c}" if c > 1 else n for n, c in turn.tools.items()) or "no tools"
        self.info("[round %d/%d] %s: %d+%d tok, %.1f tok/s, %s%s", turn.round, self._last, turn.agent,
                  turn.prompt_tokens, turn.completion_tokens, turn.tokens_per_second, tools,
                  f", ERROR {turn.errors[-1]}" if turn.errors else "")
        for problem in dict.fromkeys(turn.problems):
            self.warning("%s: %s", turn.agent, problem)

    def _progress(self, event: ReplyProgress) -> None:
        if not self.live or event.progress is None:
            return
        progress = event.progress
        rate = progress.tokens / progress.seconds if progress.seconds else 0.0
        doing = f", calling {progress.tool}" if getattr(progress, "tool", "") else (
            ", thinking" if getattr(progress, "thinking", False) else "")
        self.status(f"[round {event.round}/{self._last}] {event.agent}: {progress.seconds:.0f}s, "
                    f"{progress.tokens} tok, {rate:.1f} tok/s{doing}")

    @property
    def live(self) -> bool:
        """A terminal that can take a status line that rewrites itself."""
        try:
            return self._console is not None and self._console.isatty()
        except (AttributeError, ValueError):
            return False

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


_MODES = {"constrained": "constrained (JSON by a schema)", "text": "as text (<tool_call> blocks)",
          "native": "native (the tools field)"}


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
