"""What the runlog's pages and commands share: one copy each of reading a
time, telling whether a run's process lives, writing durations, escaping
for HTML, and the page style."""

from __future__ import annotations

import html
import os
import socket
from datetime import datetime
from pathlib import Path

from ..errors import ConfigError
from ..safetext import one_line, printable  # noqa: F401 - one_line is the runlog's too

CHART_ENGINES = ("auto", "matplotlib", "svg")


def when(value) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def alive(pid, host: str, started: datetime | None) -> bool | None:
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
    return same_process(pid, started)


def same_process(pid: int, started: datetime | None) -> bool:
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


def clock(seconds: float) -> str:
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


def escape(value) -> str:
    """Text for HTML, quotes included: everything a model wrote goes through
    this (no bidi override or control character reorders or hides the page)."""
    return html.escape(printable(value), quote=True)


def chart_engine(charts: str) -> str:
    if charts == "svg":
        return "svg"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if charts == "matplotlib":
            raise ConfigError("matplotlib is not installed: pip install 'azclaw[report]', "
                              "or draw the charts as SVG (charts='svg', --charts svg)") from None
        return "svg"
    return "matplotlib"


PAGE_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1000px; margin: 24px auto; padding: 0 16px; }
h1 { margin: 0 0 4px; font-size: 24px; }
h2 { margin: 28px 0 8px; font-size: 18px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub, .note, footer { color: #666; font-size: 13px; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 16px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; min-width: 90px; }
.card .k { color: #666; font-size: 12px; } .card .v { font-size: 16px; font-weight: 600; }
nav { font-size: 13px; margin-top: 4px; }
figure.chart { margin: 12px 0 20px; } figure.chart img, figure.chart svg { width: 100%; height: auto; }
figcaption { color: #222; font-size: 14px; font-weight: 600; margin-bottom: 2px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #fafafa; }
table.num td:not(:first-child), table.num th:not(:first-child) { text-align: right; }
td.answer { max-width: 420px; white-space: pre-wrap; }
td.ok { color: #1a7f37; font-weight: 600; } td.bad { color: #cf222e; font-weight: 600; }
ul.errors li { font-family: monospace; font-size: 12px; }
footer { margin-top: 32px; }
"""
