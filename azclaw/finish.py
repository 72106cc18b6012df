"""The finish line: when a topic (or ``--done-agent``, ``--finish-check``)
says how to tell that the work is done, the run ends there, with reason
``done``, instead of running to its last round.

* ``agent``: that agent, and only it, is offered ``done(reason)``. The
  round finishes (the agents after it take their turn), then the run ends.
* ``check``: a command run in the output folder under ``run_python``'s
  sandbox (a leading ``python`` is azclaw's Python), e.g. ``python -m
  pytest -q``. Without a done agent it runs after every round that changed
  the output folder, and its success ends the run. With one, it confirms
  each ``done`` call instead: a call whose check fails is answered with
  the end of the check's output and the run goes on.

``FinishLine`` is an observer of the run's turns; it journals every check
(``FinishChecked``) and returns ``Stop("done")`` when the line is reached.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from .errors import ConfigError, ToolError
from .events import Event, FinishChecked, RoundFinished, RunStarted, Stop, TurnFinished
from .limits import command
from .tools import sandbox
from .tools.registry import Tool, ToolContext

CHECK_TIMEOUT = 120.0  # seconds a check may take (a test suite)
CHECK_OUTPUT = 2000  # characters of its output kept: the end, where a test run says what failed
FINGERPRINT_FILES = 10_000  # files of the output folder looked at to tell whether it changed
DONE = "done"


class FinishLine:
    """Who may say the work is done, and the command that tells it."""

    def __init__(self, agent: str, check: tuple[str, ...], output: Path, sources=(), python: str = "sandboxed"):
        self.agent, self.check = agent, tuple(check)
        self.output, self.sources, self.python = Path(output), list(sources), python
        self.declared: tuple[str, str, int] | None = None  # (agent, reason, round) of a done call that counts
        self.last_check: tuple[bool, str, str] | None = None
        self.seen: tuple | None = None  # the output folder's fingerprint at the last check (or the start)
        self.tool = Tool(DONE, self._description(), {"reason": {"type": "string"}}, ["reason"], self._done,
                         approve=False)

    @classmethod
    def of(cls, topic, options, agents, registry, output, sources) -> "FinishLine | None":
        """The finish line of a run: the options' over the topic's; None
        when neither says one. A bad one raises ConfigError."""
        finish = topic.finish
        agent = options.done_agent or (finish.agent if finish else "")
        check = command(options.finish_check, "finish_check") if options.finish_check else (
            finish.check if finish else ())
        if not agent and not check:
            return None
        names = [a.name for a in agents]
        if agent and agent not in names:
            where = "done_agent" if options.done_agent else f"topic {topic.name}: finish.agent"
            raise ConfigError(f"{where}: {agent!r} is not in the team; the team: {', '.join(names)}")
        if agent and registry.get(DONE) is not None:
            raise ConfigError(f"tool {DONE!r}: the finish line offers its own done tool to {agent}; "
                              "rename the registry's tool of that name")
        if check and options.python == "off":
            raise ConfigError(f"finish check {shlex.join(check)!r}: it runs under run_python's sandbox, and "
                              "run_python is off for this run")
        return cls(agent, check, output, sources, options.python)

    @property
    def command_line(self) -> str:
        return shlex.join(self.check)

    def tools(self, agent: str) -> list[Tool]:
        """The tools the finish line offers ``agent`` (``done`` to its agent)."""
        return [self.tool] if self.agent and agent == self.agent else []

    def _description(self) -> str:
        confirm = f" once the check `{self.command_line}` passes in the output folder" if self.check else ""
        return ("Declare the team's work done, saying why; the run then ends when this round ends" + confirm
                + ". Call it only when the task is complete.")

    # -- the check ------------------------------------------------------------------
    def run_check(self) -> tuple[bool, str, str]:
        """(passed, status, the end of its output); a sandbox that cannot run it fails it."""
        try:
            result = sandbox.run_command(self.check, self.output, CHECK_TIMEOUT, CHECK_OUTPUT, self.python,
                                         self.sources)
        except ToolError as exc:
            result = (False, "not run", str(exc))
        self.last_check = result
        self.seen = fingerprint(self.output)
        return result

    def _done(self, reason: str, _ctx: ToolContext = None) -> str:
        if not reason.strip():
            raise ToolError("reason is empty: say why the work is done")
        if not self.check:
            _ctx.note(DONE, reason, "declared")
            return "Noted: the work is done. The run ends when this round ends."
        passed, status, output = self.run_check()
        if passed:
            _ctx.note(DONE, reason, "confirmed")
            return f"The check `{self.command_line}` passed ({status}): the run ends when this round ends."
        _ctx.note(DONE, reason, "refused")
        return (f"NOT DONE: the check `{self.command_line}` failed ({status}); the run goes on. "
                f"The end of its output:\n{output}")

    # -- the observer -----------------------------------------------------------------
    def __call__(self, event: Event):
        if isinstance(event, RunStarted):
            self.declared, self.seen = None, fingerprint(self.output)
            return None
        if isinstance(event, TurnFinished) and not event.turn.probe:
            return self._calls(event.turn)
        if isinstance(event, RoundFinished):
            return self._round(event.round)
        return None

    def _calls(self, turn):
        checked = []
        for use in turn.calls:
            effect = use.effect
            if effect is None or effect.kind != DONE or turn.agent != self.agent:
                continue
            if effect.status in ("confirmed", "refused") and self.last_check is not None:
                passed, status, output = self.last_check
                checked.append(FinishChecked(turn.round, self.command_line, passed, status, output))
            if effect.status in ("declared", "confirmed"):
                self.declared = (turn.agent, effect.target, turn.round)
        return checked or None

    def _round(self, round_no: int):
        if self.declared is not None:
            agent, reason, _ = self.declared
            passed = f"; `{self.command_line}` passed" if self.check else ""
            return Stop("done", f"{agent} declared the work done in round {round_no}: {reason}{passed}",
                        {"agent": agent, "reason": reason, "round": round_no,
                         **({"check": self.command_line} if self.check else {})})
        if not self.check or self.agent or fingerprint(self.output) == self.seen:
            return None
        passed, status, output = self.run_check()
        checked = FinishChecked(round_no, self.command_line, passed, status, output)
        if not passed:
            return checked
        return [checked, Stop("done", f"`{self.command_line}` passed after round {round_no}",
                              {"check": self.command_line, "round": round_no})]


def fingerprint(folder: Path) -> tuple:
    """What tells whether the output folder changed: its files' paths, sizes
    and times (hidden folders and ``__pycache__`` left out: a check's own)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            if name.startswith("."):
                continue
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            found.append((os.path.relpath(os.path.join(root, name), folder), info.st_size, info.st_mtime_ns))
            if len(found) >= FINGERPRINT_FILES:
                return tuple(found)
    return tuple(found)
