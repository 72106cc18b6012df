"""What a run is doing or did, read from its journal and checkpoint.

Works from another terminal while the run goes on: the journal is only ever
appended to or atomically replaced, and a torn last line is skipped.
``read_status`` gives a ``RunStatus``; ``format_status`` the text
``azclaw status`` prints; ``RunStatus.to_dict`` what ``--json`` prints.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..checkpoint import Checkpoint
from ..errors import AzclawError
from ..safetext import one_line, printable
from ..stats import AgentStats, Coherence, agent_table
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
    state: str = "unknown"  # running, killed, unknown, or the run_end reason
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

    def to_dict(self) -> dict:
        data = {k: getattr(self, k) for k in (
            "journal", "topic", "title", "state", "running", "pid", "host", "round", "last_round",
            "current_round", "phase", "started", "updated", "sessions", "stop_reason", "checkpoint",
            "checkpoint_round", "last_errors", "probes")}
        data["elapsed"] = round(self.elapsed, 1)
        data["agents"] = [{"name": name, "turns": a.turns, "prompt_tokens": a.prompt_tokens,
                           "completion_tokens": a.completion_tokens, "tokens": a.tokens,
                           "cached_tokens": a.cached_tokens, "cached_share": round(a.cached_share, 3),
                           "seconds": round(a.seconds, 3), "tokens_per_second": round(a.tokens_per_second, 2),
                           "tool_calls": a.tool_calls, "tool_calls_by_name": dict(a.tool_calls_by_name),
                           "memories": a.memories_stored, "files": a.files_written, "errors": a.errors,
                           "empty_replies": a.empty_replies, "truncated_replies": a.truncated_replies}
                          for name, a in self.agents.items()]
        data["coherence"] = self.coherence.to_dict()
        data["working"] = [w.to_dict() for w in self.working]
        return data


def read_status(log_dir: str | Path = "logs", now: datetime | None = None) -> RunStatus:
    """Read the status of the newest run in ``log_dir``."""
    return status_of(RunLog.read(log_dir), now)


def status_of(run: RunLog, now: datetime | None = None) -> RunStatus:
    """The status a run's journal tells."""
    events, path = run.events, run.path
    starts = [e for e in events if e.get("event") == "run_start"]
    if not starts:
        raise AzclawError(f"{path}: not a run journal (no run_start line)")
    first, last = starts[0], starts[-1]
    status = RunStatus(journal=str(path), topic=str(last.get("topic", "")), title=str(last.get("title", "")),
                       pid=last.get("pid"), host=str(last.get("host") or ""),
                       last_round=_round(last.get("last_round")), started=str(first.get("time", "")),
                       updated=str(events[-1].get("time", "")), sessions=len(starts))
    now = now or datetime.now(timezone.utc)
    ends = {e.get("run"): e for e in events if e.get("event") == "run_end"}
    end = ends.get(last.get("run"))
    if end is not None:
        status.state, status.running = str(end.get("reason", "finished")), False
    else:
        status.running = _alive(status.pid, status.host, _time(last.get("time")))
        status.state = {True: "running", False: "killed", None: "unknown"}[status.running]
    stops = [e for e in events if e.get("event") == "stop" and e.get("run") == last.get("run")]
    status.stop_reason = str(stops[-1].get("reason", "")) if stops else ""
    status.elapsed = _elapsed(events, starts, ends, now if status.running else None)

    team = [str(a) for a in last.get("agents") or []]
    stats = run.state().stats
    status.agents = {name: stats.agent(name) for name in team}
    status.agents.update(stats.agents)
    by_round: dict[int, set] = {}
    for t in run.turns:
        by_round.setdefault(t.round, set()).add(t.agent)
        status.last_errors.extend({"round": t.round, "agent": t.agent, "error": e} for e in t.errors)
    status.last_errors = status.last_errors[-LAST_ERRORS:]
    status.probes = run.probes
    status.coherence = Coherence.of(status.probes)

    complete = [r for r, names in by_round.items() if set(team or status.agents) <= names]
    status.round = _round(end.get("round")) if end is not None else max(complete, default=0)
    if status.running and (not status.last_round or status.round < status.last_round):
        status.current_round = status.round + 1
    shown = status.current_round or status.round
    status.phase = _phase(last.get("phases"), shown) or next(
        (t.phase for t in reversed(run.turns) if t.round == shown), None)
    if end is None and status.running is not False:
        status.working = working(events, last.get("run"), now)
    _read_checkpoint(status, Path(path))
    return status


def working(events: list[dict], run_id, now: datetime) -> list[Working]:
    """The turns of session ``run_id`` that began (``turn_start``) and have
    no ``turn`` line yet, in the order they began."""
    begun: dict[tuple, dict] = {}
    for e in events:
        if e.get("run") != run_id:
            continue
        key = (e.get("round"), e.get("agent"))
        if e.get("event") == "turn_start":
            begun[key] = e
        elif e.get("event") == "turn":
            begun.pop(key, None)
    result = []
    for e in begun.values():
        since = _time(e.get("time"))
        seconds = max(0.0, (now - since).total_seconds()) if since else 0.0
        result.append(Working(str(e.get("agent") or ""), _round(e.get("round")), str(e.get("time") or ""), seconds))
    return result


def format_status(s: RunStatus) -> str:
    """The text ``azclaw status`` prints."""
    running = {"running": f"running (pid {s.pid}{'' if not s.host else ' on ' + s.host})",
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
             f"  elapsed     {_duration(s.elapsed)}" + (f" over {s.sessions} sessions" if s.sessions > 1 else ""),
             f"  coherence   {s.coherence}",
             f"  journal     {s.journal} (updated {s.updated[:19].replace('T', ' ')} UTC)"]
    if s.working:
        lines.insert(3, "  working     " + ", ".join(
            f"{w.agent} for {short_duration(w.seconds)}" for w in s.working)
            + f" (since {s.working[0].since[11:19]} UTC)")
    if s.checkpoint:
        lines.append(f"  checkpoint  {s.checkpoint} (round {s.checkpoint_round})")
    lines.append("")
    lines.append(agent_table(s.agents))
    if s.last_errors:
        lines.append("")
        lines.append("last errors:")
        lines.extend(f"  round {e['round']} {e['agent']}: {_one_line(e['error'], 160)}" for e in s.last_errors)
    return printable("\n".join(lines))  # the journal's words reach a terminal: no escape codes


# -- helpers ------------------------------------------------------------------

def _round(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _time(value) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _alive(pid, host: str, started: datetime | None) -> bool | None:
    """Is the process that wrote ``run_start`` still running?"""
    if not isinstance(pid, int) or pid <= 0 or (host and host != socket.gethostname()):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    except OSError:
        return None
    return _same_process(pid, started)


def _same_process(pid: int, started: datetime | None) -> bool:
    """False for a zombie, or for a process that took over the pid after the
    run started (Linux /proc; elsewhere trust the pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):
            return False
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        since = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True
    return started is None or since <= started.timestamp() + 60  # slack for clock and boot-time skew


def _elapsed(events: list[dict], starts: list[dict], ends: dict, now: datetime | None) -> float:
    """Seconds over the sessions: each from its run_start to its run_end, or
    to its last line (or now, for the live one)."""
    last_seen: dict = {}
    for e in events:
        last_seen[e.get("run")] = e.get("time")
    total = 0.0
    for i, start in enumerate(starts):
        begin = _time(start.get("time"))
        end = ends.get(start.get("run"))
        stop = _time(end.get("time")) if end else (now if now and i == len(starts) - 1
                                                      else _time(last_seen.get(start.get("run"))))
        if begin and stop:
            total += max(0.0, (stop - begin).total_seconds())
    return total


def _phase(phases, round_no: int) -> str | None:
    for p in phases or []:
        try:
            start, end = p["rounds"]
            if start <= round_no <= end:
                return str(p["name"])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _read_checkpoint(status: RunStatus, journal: Path) -> None:
    if not status.topic:
        return
    path = journal.with_name(f"{status.topic}_checkpoint.json")
    try:
        checkpoint = Checkpoint.load(path)
    except AzclawError:
        return
    status.checkpoint, status.checkpoint_round = str(path), checkpoint.round


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def short_duration(seconds: float) -> str:
    """45s, 2m13s, 1h02m."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _one_line(text: str, limit: int) -> str:
    text = one_line(" ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"
