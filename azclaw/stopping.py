"""Ending a run cleanly: a STOP file, ``azclaw stop``, SIGINT and SIGTERM.

The first request lets the current round finish; a second SIGINT or SIGTERM
stops at once (the last completed round's checkpoint is still written).
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from contextlib import contextmanager
from pathlib import Path

from .events import Ending

log = logging.getLogger("azclaw")


class StopControl:
    """Tells the round loop whether to stop after the current round."""

    def __init__(self, stop_file: Path):
        self.stop_file = Path(stop_file)
        self.reason = ""  # what asked: "STOP file ./STOP", "SIGINT received"
        self.kind = ""  # "stopped" (a STOP file, azclaw stop) or "signal"
        self._requested = threading.Event()
        self._previous: dict[int, object] = {}
        self._deferring = False
        self._pending = ""
        self._announce = None
        self._warned = False  # about a STOP that is not a file

    def clear_stale(self) -> bool:
        """Remove a STOP file left from an earlier run; True if there was one.
        A STOP that is a folder is left alone, with one warning line."""
        if not self._is_file():
            return False
        try:
            self.stop_file.unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot remove the STOP file %s (%s); remove it by hand", self.stop_file, exc.strerror)
            return False

    def request(self, reason: str, kind: str = "stopped") -> None:
        if not self._requested.is_set():
            self.reason, self.kind = reason, kind
            self._requested.set()

    def should_stop(self) -> bool:
        if not self._requested.is_set() and self._is_file():
            self.request(f"STOP file {self.stop_file}")
        return self._requested.is_set()

    def ending(self) -> Ending | None:
        """Why the run should end now, or None."""
        return Ending(self.kind, self.reason) if self.should_stop() else None

    def _is_file(self) -> bool:
        """Is there a STOP file? Only a file (or a link to one) asks the run to
        stop: ``azclaw stop`` writes one. Anything else by that name (a folder,
        a pipe) is said once, in a warning line, and does not stop the run."""
        try:
            mode = os.stat(self.stop_file).st_mode
        except OSError:
            return False
        if stat.S_ISREG(mode):
            return True
        if not self._warned:
            self._warned = True
            log.warning("%s is not a file (%s): it does not stop the run; azclaw stop writes a STOP file",
                        self.stop_file, "a folder" if stat.S_ISDIR(mode) else "not a regular file")
        return False

    def consume_stop_file(self) -> None:
        """A STOP file has done its job once the run stopped for it."""
        self.clear_stale()

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._requested.is_set():
            if self._deferring:
                self._pending = f"second {name}"
                return
            raise KeyboardInterrupt(f"second {name}")
        self.request(f"{name} received", "signal")
        if self._announce is not None:  # at once: a person pressed a key and waits for an answer
            self._announce(f"{name} received")

    @contextmanager
    def deferred(self):
        """A second signal inside this block stops the run when the block
        ends, so a round is folded into the stats and history whole or not
        at all (a half-counted round would be counted again on resume)."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            pending, self._pending = self._pending, ""
            if pending:
                raise KeyboardInterrupt(pending)

    def install(self, announce=None) -> None:
        """Catch SIGINT and SIGTERM (only possible in the main thread);
        ``announce(reason)`` says at once what the first one will do."""
        self._announce = announce
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
