"""``azclaw bench``: one topic or task in two or more context modes, run side
by side, each in fresh folders, then one comparison from their journals::

    OUT/memory/{agents,output,logs}   OUT/full/...   OUT/bench_report.html

The modes run at once, one thread each, in lockstep: no mode starts round
n+1 before every mode has finished round n (``Lockstep``). Whatever load
the machine carries hits every mode alike; run one after the other, a
bench measured the load that came and went between them (the same run
took 0.1x or 1.0x the seconds of another depending on when it ran). With
``teams`` each mode has its own servers (``--local`` starts a set per
mode), so no mode evicts another's prompts from a server's cache.

Before round 1 every endpoint answers one short request, so no mode pays
for a cold server. A stop (Ctrl+C, SIGTERM, ``azclaw stop``: the STOP
file) ends every mode after its round; a second Ctrl+C ends the bench at
once. Either way the comparison is written from the rounds
that finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent import Agent
from .client.llm import Outages
from .events import RoundFinished
from .options import RunFolder
from .session import default_client
from .stopping import StopControl
from .tools.builtin import build_default_registry
from .context import ContextMode
from .errors import AzclawError, ConfigError, EndpointError
from .runlog.bench_report import write_bench_report
from .runlog.compare import Comparison, compare_runs
from .topic import Topic

REPORT_NAME = "bench_report.html"
POLL = 0.2  # seconds between the main thread's looks at the modes and its stop control


@dataclass
class BenchResult:
    """The comparison, where its page is, and why the bench ended early
    ("" when every mode ran to its last round)."""

    comparison: Comparison
    report: Path
    stopped: str = ""
    interrupted: bool = False  # a second Ctrl+C: the mode in progress ended at once
    modes_run: list[str] = field(default_factory=list)


def parse_modes(value: str | list) -> list[ContextMode]:
    """``memory,full,window:3`` -> modes (two or more, each once)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    modes = [ContextMode.parse(item) for item in items if str(item).strip()]
    if len(modes) < 2:
        raise ConfigError(f"--modes {value!r}: a bench compares two or more modes, e.g. memory,full")
    names = [str(m) for m in modes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"--modes: {twice[0]} is named twice")
    return modes


def mode_folders(out: Path, modes: list[ContextMode]) -> dict[str, Path]:
    return {str(m): Path(out) / m.slug for m in modes}


def check_fresh(folders: dict[str, Path]) -> None:
    """Every mode starts in a folder of its own that holds nothing yet."""
    for folder in folders.values():
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ConfigError(f"{folder}: already holds a run; give the bench a new --out folder "
                              "(or remove this one)")


def warm_up(agents: list[Agent]) -> None:
    """One short request to each endpoint (errors are for the run to report)."""
    seen: set[tuple] = set()
    for agent in agents:
        key = tuple(agent.endpoints)
        if key in seen:
            continue
        seen.add(key)
        client = default_client(agent, Outages())
        try:
            client.health_check()
            client.chat([{"role": "user", "content": "Say OK."}], None, 8, 0.0)
        except EndpointError:
            pass


class Lockstep:
    """Modes that go round by round together: a mode that has finished
    round n waits (``arrive``) until every mode still running has finished
    it too; a mode that ends ``leave``s, so nobody waits for it."""

    def __init__(self, names: list[str]):
        self._done = {name: 0 for name in names}
        self._running = set(names)
        self._free = False
        self._cond = threading.Condition()

    def arrive(self, name: str, round_no: int) -> None:
        with self._cond:
            self._done[name] = round_no
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._free or all(self._done[n] >= round_no for n in self._running))

    def leave(self, name: str) -> None:
        with self._cond:
            self._running.discard(name)
            self._cond.notify_all()

    def release(self) -> None:
        """Nobody waits any more (the bench is ending at once)."""
        with self._cond:
            self._free = True
            self._cond.notify_all()


@dataclass
class _Mode:
    """One mode's run in its thread."""

    mode: ContextMode
    orch: Any
    thread: threading.Thread | None = None
    error: BaseException | None = None

    @property
    def name(self) -> str:
        return str(self.mode)

    def stopped_by_user(self) -> bool:
        """Ended by ``azclaw stop`` (the STOP file the modes watch too), not by a failure or a limit."""
        return self.error is None and self.orch.ending is not None and self.orch.ending.reason == "stopped"

    def ended(self) -> str:
        """Why the mode's run ended early ('' when it reached its last round or still runs)."""
        ending = self.orch.ending
        if self.error is not None and not isinstance(self.error, AzclawError):
            return f"{type(self.error).__name__}: {self.error}"
        if self.error is not None:
            return str(self.error)
        return "" if ending is None or ending.reason == "max_rounds" else (ending.detail or ending.reason)


def run_bench(team: Callable[[], list[Agent]], modes: list[ContextMode], out: str | Path, *,
              orchestrator: Callable[..., Any], topic: Callable[[], Topic | None] = lambda: None,
              task: str | None = None, rounds: int | None = None, charts: str = "auto", command: str = "",
              say: Callable[[str], None] = lambda line: None,
              teams: dict[str, Callable[[], list[Agent]]] | None = None, **options) -> BenchResult:
    """Run ``topic()`` (or ``task``) in every mode at once, round by round,
    each with a fresh ``team()`` (or ``teams[mode]()``: a mode's own
    servers), then write the comparison. ``orchestrator`` is the class
    that runs a mode (``azclaw.Orchestrator``; the bench sits beside the
    loop, not under it); ``options`` go to every one (their consoles stay
    quiet: ``say`` gets a line per mode and round)."""
    out = Path(out)
    folders = mode_folders(out, modes)
    check_fresh(folders)
    first_topic = topic()  # a bad topic fails before anything runs
    team_of = {str(m): (teams or {}).get(str(m), team) for m in modes}
    lockstep = Lockstep([str(m) for m in modes])
    options["verbose"] = False
    observers = list(options.pop("observers", ()))
    runs: list[_Mode] = []
    for n, mode in enumerate(modes):
        where = RunFolder.under(folders[str(mode)])
        registry = build_default_registry()
        orch = orchestrator(team_of[str(mode)](), topic=first_topic if n == 0 else topic(), output_dir=where.output,
                            log_dir=where.logs, agents_dir=where.agents, context=mode, registry=registry,
                            observers=[*observers, _progress(str(mode), lockstep, say)], **options)
        if task:
            orch.set_task(task)
        runs.append(_Mode(mode, orch))
    stopped, interrupted = "", False
    control = StopControl(Path(options.get("stop_file", "STOP")))  # azclaw stop; the modes watch it too
    control.clear_stale()
    control.install(announce=lambda why: say(f"azclaw bench: {why}: every mode stops after its round; "
                                             "press Ctrl+C again to stop now"))
    try:
        warm_up([a for m in modes for a in team_of[str(m)]()])
        say(f"azclaw bench: modes {', '.join(r.name for r in runs)} side by side in {out}")
        for run in runs:
            run.thread = threading.Thread(target=_run_mode, args=(run, rounds, lockstep), daemon=True,
                                          name=f"bench-{run.mode.slug}")
            run.thread.start()
        stopped = _watch(runs, control)
    except KeyboardInterrupt:
        stopped, interrupted = "interrupted", True
        lockstep.release()
        _stop_all(runs, "interrupted")
    finally:
        control.restore()
    ran = [r.name for r in runs if r.thread is not None]
    failed = next((r.error for r in runs if isinstance(r.error, AzclawError)), None)
    if failed is not None:
        if any(RunFolder.under(folders[m]).logs.is_dir() for m in ran):
            result = _write(folders, out, charts, command, "error", False, ran)
            say(f"azclaw bench: wrote {result.report} from what finished")
        raise failed
    crashed = next((r.error for r in runs if r.error is not None), None)
    if crashed is not None:
        raise crashed
    return _write(folders, out, charts, command, stopped, interrupted, ran)


def _progress(mode: str, lockstep: Lockstep, say: Callable[[str], None]):
    """The observer that says how a mode's round went and holds the mode
    until every mode has finished that round."""
    def observe(event) -> None:
        if isinstance(event, RoundFinished):
            turns = [t for t in event.turns if not t.failed] or list(event.turns)
            n = max(1, len(turns))
            prompt = sum(t.prompt_tokens for t in turns) / n
            evaluated = sum(t.prompt_tokens - t.cached_tokens for t in turns) / n
            seconds = sum(t.seconds for t in turns) / n
            say(f"azclaw bench: {mode}: round {event.round}: {prompt:,.0f} prompt tokens per turn "
                f"({evaluated:,.0f} evaluated), {seconds:.1f} s per turn")
            lockstep.arrive(mode, event.round)
    return observe


def _run_mode(run: _Mode, rounds: int | None, lockstep: Lockstep) -> None:
    try:
        with run.orch.registry:
            run.orch.run(max_rounds=rounds)
    except BaseException as exc:  # the main thread reports it
        run.error = exc
    finally:
        lockstep.leave(run.name)


def _watch(runs: list[_Mode], control: StopControl) -> str:
    """Wait for every mode; a stop of the bench or of one mode stops them
    all after their round. Returns why the bench ended early ('')."""
    stopped = ""
    while any(r.thread.is_alive() for r in runs):
        for r in runs:
            r.thread.join(POLL / len(runs))
        if not stopped and control.should_stop():
            stopped = f"stopped ({control.reason})"
            _stop_all(runs, control.reason, control.kind)
        early = next((r for r in runs if not r.thread.is_alive() and r.ended()), None)
        if not stopped and early is not None and early.stopped_by_user():  # it saw the STOP file first
            stopped = f"stopped ({early.ended()})"
            _stop_all(runs, early.ended())
        elif not stopped and early is not None:
            stopped = f"mode {early.name} stopped ({early.ended()})"
            _stop_all(runs, f"mode {early.name} stopped")
    if not stopped:
        early = next((r for r in runs if r.ended()), None)
        stopped = f"mode {early.name} stopped ({early.ended()})" if early else ""
    return stopped


def _stop_all(runs: list[_Mode], why: str, kind: str = "stopped") -> None:
    for r in runs:
        r.orch.stop.request(why, kind)
        for session in r.orch.sessions.values():  # a wait for a server that is down ends now
            session.cancel.set()


def _write(folders, out: Path, charts: str, command: str, stopped: str, interrupted: bool,
           ran: list[str]) -> BenchResult:
    comparison = compare_runs(folders)
    report = write_bench_report(comparison, out / REPORT_NAME, charts, command)
    return BenchResult(comparison, report, stopped, interrupted, ran)
