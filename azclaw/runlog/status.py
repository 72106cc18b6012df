"""What a run is doing or did, read from its journal and checkpoint.

Works from another terminal while the run goes on: the journal is only ever
appended to or atomically replaced, and a torn last line is skipped.
``read_status`` gives a ``RunStatus``; ``format_status`` the text
``azclaw status`` prints; ``RunStatus.to_dict`` what ``--json`` prints.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..checkpoint import Checkpoint
from ..errors import AzclawError
from ..options import RunFolder
from ..progress import describe, idle_rounds
from ..safetext import printable
from ..stats import AgentStats, Coherence, agent_table
from .common import alive, clock, one_line, short_duration, when
from .reader import RunLog

LAST_ERRORS = 5


@dataclass
class Working:
    """An agent whose turn has begun (its ``turn_start``) and not ended."""

    agent: str
    round: int
    since: str  # ISO-8601 time of its turn_start
    seconds: float  # how long it has been working, when the status was read

    def to_dict(self) -> dict:
        return {"agent": self.agent, "round": self.round, "since": self.since, "seconds": round(self.seconds, 1)}


@dataclass
class RunStatus:
    """The state of the current or last run in a log folder."""

    journal: str
    topic: str = ""
    title: str = ""
    state: str = "unknown"  # running, killed, unknown, or ended
    reason: str = ""  # why it ended (events.REASONS): done, max_rounds, budget, stopped, signal, ...
    reason_detail: str = ""  # the figures behind it, in words
    reason_figures: dict = field(default_factory=dict)  # the figures: budget, option, limit, used...
    summary: str = ""  # the final summary of an ended run
    running: bool | None = None  # None: cannot tell (another host, or no pid)
    pid: int | None = None
    host: str = ""
    round: int = 0  # the last round every agent finished
    last_round: int = 0  # the round the run is asked to reach
    current_round: int | None = None  # the round in progress, while running
    phase: str | None = None
    started: str = ""
    updated: str = ""  # time of the newest journal line
    elapsed: float = 0.0  # seconds, summed over the sessions of a resumed run
    sessions: int = 0
    stop_reason: str = ""
    checkpoint: str | None = None
    checkpoint_round: int | None = None
    agents: dict[str, AgentStats] = field(default_factory=dict)
    last_errors: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    coherence: Coherence = field(default_factory=Coherence)
    working: list[Working] = field(default_factory=list)  # turns in progress (several in a parallel round)
    warnings: list[dict] = field(default_factory=list)  # the run's warnings: {round, agent, what, message}
    progress: list = field(default_factory=list)  # RoundProgress of every finished round, in order
    checks: list = field(default_factory=list)  # the finish line's check runs (FinishChecked)

    @property
    def idle_rounds(self) -> list[int]:
        """The last rounds in a row that made nothing new."""
        return idle_rounds(self.progress)

    def to_dict(self) -> dict:
        data = {k: getattr(self, k) for k in (
            "journal", "topic", "title", "state", "reason", "reason_detail", "running", "pid", "host", "round",
            "last_round", "current_round", "phase", "started", "updated", "sessions", "stop_reason", "checkpoint",
            "checkpoint_round", "last_errors", "warnings", "probes", "reason_figures", "summary")}
        data["elapsed"] = round(self.elapsed, 1)
        data["agents"] = [{"name": name, **a.to_dict()} for name, a in self.agents.items()]
        data["coherence"] = self.coherence.to_dict()
        data["working"] = [w.to_dict() for w in self.working]
        data["progress"] = [{**p.to_dict(), "made": p.made} for p in self.progress]
        data["checks"] = [c.to_dict() for c in self.checks]
        return data


def read_status(log_dir: str | Path = "logs", now: datetime | None = None) -> RunStatus:
    """Read the status of the newest run in ``log_dir``."""
    return status_of(RunLog.read(log_dir), now)


def status_of(run: RunLog, now: datetime | None = None) -> RunStatus:
    """The status a run's journal tells."""
    if not run.starts:
        raise AzclawError(f"{run.path}: not a run journal (no run_start line)")
    first, last = run.starts[0], run.starts[-1]
    start = last.event
    status = RunStatus(journal=str(run.path), topic=start.topic, title=start.title, pid=start.pid,
                       host=start.host, last_round=start.last_round, started=first.time, updated=run.last_time,
                       sessions=len(run.starts))
    now = now or datetime.now(timezone.utc)
    end = run.ending(last.session)
    if end is not None:
        status.state, status.running = "ended", False
        status.reason, status.reason_detail = end.ending.reason, end.ending.detail
        status.reason_figures, status.summary = dict(end.ending.figures), end.summary
    else:
        status.running = alive(status.pid, status.host, when(last.time))
        status.state = {True: "running", False: "killed", None: "unknown"}[status.running]
    stop = run.stops.get(last.session)  # journals before version 4 said why in a "stop" line
    status.stop_reason = stop.reason if stop else (end.ending.detail if end and end.ending.reason in (
        "stopped", "signal") else "")
    status.elapsed = _elapsed(run, now if status.running else None)

    stats = run.state.stats
    if run.state.pending:  # a round under way, or one the run stopped in: its finished turns count
        stats = copy.deepcopy(stats)
        for turn in run.state.pending.values():
            stats.add(turn)
    status.agents = {name: stats.agent(name) for name in start.agents}
    status.agents.update(stats.agents)
    for t in run.turns:
        status.last_errors.extend({"round": t.round, "agent": t.agent, "error": e} for e in t.errors)
    status.last_errors = status.last_errors[-LAST_ERRORS:]
    status.warnings = [{"round": w.event.round, "agent": w.event.agent, "what": w.event.what,
                        "message": w.event.message} for w in run.warnings][-LAST_ERRORS * 4:]
    status.progress = [run.progress[r] for r in sorted(run.progress)]
    status.checks = list(run.checks)
    status.probes = [p.row() for p in run.probes]
    status.coherence = Coherence.of(status.probes)
    status.round = end.round if end is not None else run.state.round
    if not run.rounds_done and end is None:  # journals before version 3 have no round_end: rounds every agent spoke in
        spoke: dict[int, set] = {}
        for t in run.turns:
            spoke.setdefault(t.round, set()).add(t.agent)
        status.round = max((r for r, names in spoke.items() if set(start.agents or names) <= names), default=0)
    if status.running and (not status.last_round or status.round < status.last_round):
        status.current_round = status.round + 1
    status.phase = run.phase_at(status.current_round or status.round)
    if end is None and status.running is not False:
        status.working = [Working(agent, round_no, since, _since(since, now))
                          for (session, round_no, agent), since in run.begun.items() if session == last.session]
    _read_checkpoint(status, Path(run.path))
    return status


def _since(time: str, now: datetime) -> float:
    since = when(time)
    return max(0.0, (now - since).total_seconds()) if since else 0.0


def format_status(s: RunStatus) -> str:
    """The text ``azclaw status`` prints."""
    ended = f"ended: {s.reason}" + (f" ({s.reason_detail})" if s.reason_detail else "")
    running = {"ended": ended, "running": f"running (pid {s.pid}{'' if not s.host else ' on ' + s.host})",
               "killed": f"not running: the process{'' if s.pid is None else f' (pid {s.pid})'} ended "
                         "without finishing the run (killed or crashed); continue with azclaw run --resume",
               "unknown": "unknown: no run_end yet, and the writing process cannot be checked "
                          f"from here{'' if not s.host else ' (it ran on ' + s.host + ')'}"}
    state = running.get(s.state, f"{s.state}" + (f" ({s.stop_reason})" if s.stop_reason else ""))
    if s.current_round:
        where = f"round {s.current_round}/{s.last_round} in progress ({s.round} done)"
    else:
        where = f"round {s.round}/{s.last_round}"
    lines = [f"azclaw run {s.topic!r}: {one_line(s.title)}",
             f"  state       {state}",
             f"  progress    {where}" + (f", phase {one_line(s.phase)}" if s.phase else ""),
             f"  elapsed     {clock(s.elapsed)}" + (f" over {s.sessions} sessions" if s.sessions > 1 else ""),
             f"  coherence   {s.coherence}",
             f"  journal     {s.journal} (updated {s.updated[:19].replace('T', ' ')} UTC)"]
    if s.working:
        lines.insert(3, "  working     " + ", ".join(
            f"{w.agent} for {short_duration(w.seconds)}" for w in s.working)
            + f" (since {s.working[0].since[11:19]} UTC)")
    if s.progress:
        last = s.progress[-1]
        lines.insert(3, f"  last round  {last.round}: {describe(last)}")
        idle = s.idle_rounds
        if len(idle) >= 2:
            lines.insert(4, f"  stalled     nothing new in {len(idle)} rounds ({idle[0]}-{idle[-1]}): no file "
                            "created or changed, no new memory")
    if s.checks:
        check = s.checks[-1]
        lines.append(f"  finish      `{check.command}` {'passed' if check.ok else 'failed'} after round "
                     f"{check.round} ({check.status})")
    if s.checkpoint:
        lines.append(f"  checkpoint  {s.checkpoint} (round {s.checkpoint_round})")
    lines.append("")
    lines.append(agent_table(s.agents))
    outcome = _outcome_lines(s.summary)
    if outcome:
        lines.append("")
        lines.extend(outcome)
    watch = [w for w in s.warnings if w.get("what") in ("loop", "no_tools", "no_progress", "silent", "skip")]
    if watch:
        lines.append("")
        lines.append("last warnings:")
        lines.extend(f"  round {w['round']}{' ' + w['agent'] if w['agent'] else ''}: {one_line(w['message'], 160)}"
                     for w in watch[-LAST_ERRORS:])
    if s.last_errors:
        lines.append("")
        lines.append("last errors:")
        lines.extend(f"  round {e['round']} {e['agent']}: {one_line(e['error'], 160)}" for e in s.last_errors)
    return printable("\n".join(lines))  # the journal's words reach a terminal: no escape codes


# -- helpers ------------------------------------------------------------------

_OUTCOME = ("Cost:", "Produced:", "Not done:", "Look at:", "To go on:")


def _outcome_lines(summary: str) -> list[str]:
    """The final summary's lines that the status does not already say (the totals it has)."""
    out, keep = [], False
    for line in summary.splitlines():
        if line.startswith(_OUTCOME):
            keep = True
        elif not line.startswith("          "):
            keep = False
        if keep:
            out.append(line)
    return out

def _elapsed(run: RunLog, now: datetime | None) -> float:
    """Seconds over the sessions: each from its run_start to its run_end, or
    to the journal's last line (or now, for the live one)."""
    total = 0.0
    for i, item in enumerate(run.starts):
        begin = when(item.time)
        end = run.ends.get(item.session)
        following = run.starts[i + 1].time if i + 1 < len(run.starts) else run.last_time
        stop = when(end.time) if end else (now if now and i == len(run.starts) - 1 else when(following))
        if begin and stop:
            total += max(0.0, (stop - begin).total_seconds())
    return total


def _read_checkpoint(status: RunStatus, journal: Path) -> None:
    if not status.topic:
        return
    path = RunFolder(logs=journal.parent).checkpoint(status.topic)
    try:
        checkpoint = Checkpoint.load(path)
    except AzclawError:
        return
    status.checkpoint, status.checkpoint_round = str(path), checkpoint.round


