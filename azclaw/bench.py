"""``azclaw bench``: one topic or task in two or more context modes, run one
after the other against the same endpoint, each in fresh folders, then one
comparison from their journals::

    OUT/memory/{agents,output,logs}   OUT/full/...   OUT/bench_report.html

Before the first mode every endpoint answers one short request, so no mode
pays for a cold server. A stop (Ctrl+C, ``azclaw stop``, SIGTERM) ends the
mode in progress after its round, as for ``azclaw run``, and no later mode
starts; a second Ctrl+C ends it at once. Either way the comparison is
written from the rounds that finished.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent import Agent
from .client.llm import Outages
from .options import RunFolder
from .session import default_client
from .tools.builtin import build_default_registry
from .context import ContextMode
from .errors import AzclawError, ConfigError, EndpointError
from .runlog.bench_report import write_bench_report
from .runlog.compare import Comparison, compare_runs
from .topic import Topic

REPORT_NAME = "bench_report.html"


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


def run_bench(team: Callable[[], list[Agent]], modes: list[ContextMode], out: str | Path, *,
              orchestrator: Callable[..., Any], topic: Callable[[], Topic | None] = lambda: None,
              task: str | None = None, rounds: int | None = None, charts: str = "auto", command: str = "",
              say: Callable[[str], None] = lambda line: None, **options) -> BenchResult:
    """Run ``topic()`` (or ``task``) once per mode with a fresh ``team()``,
    then write the comparison. ``orchestrator`` is the class that runs a
    mode (``azclaw.Orchestrator``; the bench sits beside the loop, not
    under it); ``options`` go to every one."""
    out = Path(out)
    folders = mode_folders(out, modes)
    check_fresh(folders)
    first_topic = topic()  # a bad topic fails before anything runs
    stopped, interrupted, ran = "", False, []
    try:
        warm_up(team())
        for n, mode in enumerate(modes, 1):
            folder = folders[str(mode)]
            say(f"azclaw bench: mode {mode} ({n} of {len(modes)}) in {folder}")
            with build_default_registry() as registry:
                where = RunFolder.under(folder)
                orch = orchestrator(team(), topic=first_topic if n == 1 else topic(), output_dir=where.output,
                                    log_dir=where.logs, agents_dir=where.agents, context=mode,
                                    registry=registry, **options)
                if task:
                    orch.set_task(task)
                ran.append(str(mode))
                orch.run(max_rounds=rounds)
            if orch.ending.reason != "max_rounds":
                stopped = f"mode {mode} stopped ({orch.ending.detail or orch.ending.reason})"
                break
    except KeyboardInterrupt:
        stopped, interrupted = "interrupted", True
    except AzclawError:
        if ran and any(RunFolder.under(folders[m]).logs.is_dir() for m in ran):
            result = _write(folders, out, charts, command, "error", False, ran)
            say(f"azclaw bench: wrote {result.report} from what finished")
        raise
    return _write(folders, out, charts, command, stopped, interrupted, ran)


def _write(folders, out: Path, charts: str, command: str, stopped: str, interrupted: bool,
           ran: list[str]) -> BenchResult:
    comparison = compare_runs(folders)
    report = write_bench_report(comparison, out / REPORT_NAME, charts, command)
    return BenchResult(comparison, report, stopped, interrupted, ran)
