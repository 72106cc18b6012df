"""The final summary: why the run ended, what the team produced, what it did
not, what to look at, and how to go on.

``Outcome`` is an observer that keeps what the summary needs beyond the
run's totals (the warnings, each round's progress); ``Outcome.text``
writes the summary the console prints last and the journal keeps
(``RunFinished.summary``)::

    Ended after round 12: budget (tokens: 1,000,412 of 1,000,000)
    Rounds 12 | tokens ... (the totals and the per-agent table)
    Produced: 3 files: app.py (120 lines), db.py (41 lines), test_app.py (60 lines)
              7 memories: schema, routes, errors, ...
    Not done: reviewer called no tool in its 12 turns; nothing new in rounds 10-12
    Look at:  azclaw show --round 10-12 | azclaw report (writes logs/todo_api_report.html) | output/
    To go on: azclaw run --topic todo-api --resume --budget-tokens 2000000

An observer with a ``look_at()`` method (returning lines such as ``git
log -p output/``) adds to "Look at".
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from .budgets import cost
from .events import Ending, Event, RoundProgress, RunStarted, RunWarning
from .limits import short
from .progress import idle_rounds
from .tools import safeopen

SHOWN_FILES = 10
SHOWN_TITLES = 8
LINE_BYTES = 8 << 20  # of a file read to count its lines


class Outcome:
    """Keeps this session's warnings and progress for the summary."""

    def __init__(self):
        self.warnings: list[RunWarning] = []
        self.progress: list[RoundProgress] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.warnings, self.progress = [], []
        elif isinstance(event, RunWarning) and event.what in ("loop", "no_tools", "no_progress", "silent"):
            self.warnings.append(event)
        elif isinstance(event, RoundProgress):
            self.progress.append(event)

    def idle_rounds(self) -> list[int]:
        """The rounds at the end of this session that made nothing new."""
        return idle_rounds(self.progress)

    def text(self, totals: str, stats, ending: Ending, round_no: int, *, agents=(), output: Path = Path("output"),
             logs: Path = Path("logs"), topic: str = "", options=None, command=None, extra=()) -> str:
        """The summary. ``totals`` is the run state's (stats line, table,
        coherence); ``command`` the ``azclaw`` arguments that started the run
        (None in a program)."""
        where = f"after round {round_no}" if round_no else "before its first round finished"
        lines = [f"Ended {where}: {ending}", totals]
        price = getattr(options, "price", None)
        if price:
            dollars = cost(stats.prompt_tokens, stats.completion_tokens, price)
            lines.append(f"Cost: ${dollars:,.2f} at ${price[0]:g} and ${price[1]:g} per million prompt and "
                         "completion tokens")
        lines += self._produced(stats, output)
        missing = self._missing(stats, agents)
        if missing:
            lines.append("Not done: " + "; ".join(missing))
        lines.append("Look at:  " + " | ".join(self._look(round_no, output, logs, topic, stats) + list(extra)))
        after = go_on(ending, command, options)
        if after:
            lines.append(f"To go on: {after}")
        return "\n".join(lines)

    def _produced(self, stats, output: Path) -> list[str]:
        files, titles = stats.files, stats.memory_titles
        if not files and not stats.memories:
            return ["Produced: nothing: no file written, no memory stored"]
        shown = [f"{f} ({line_count(output, f)})" for f in files[:SHOWN_FILES]]
        more = f" and {len(files) - SHOWN_FILES} more" if len(files) > SHOWN_FILES else ""
        named = ", ".join(titles[:SHOWN_TITLES]) + (f" and {len(titles) - SHOWN_TITLES} more"
                                                   if len(titles) > SHOWN_TITLES else "")
        return [f"Produced: {_n(len(files), 'file')}" + (": " + ", ".join(shown) + more if files else " written"),
                f"          {_n(stats.memories, 'memory', 'memories')} stored"
                + (f" under {_n(len(titles), 'title')}: {named}" if titles else "")]

    def _missing(self, stats, agents) -> list[str]:
        missing = []  # (no file, no memory: "Produced" says it)
        for name in [getattr(a, "name", a) for a in agents] or list(stats.agents):
            a = stats.agents.get(name)
            if a is None or not a.turns:
                missing.append(f"{name} never took a turn")
            elif a.empty >= a.turns:
                missing.append(f"{name} never spoke (only empty replies)")
            elif not a.tool_calls:
                missing.append(f"{name} called no tool in its {_n(a.turns, 'turn')}")
        seen = set()
        for w in self.warnings:
            if w.what == "loop" and w.agent not in seen:
                seen.add(w.agent)
                missing.append(f"{w.agent} went in circles from round {w.round - _streak(w.message) + 1}")
        idle = self.idle_rounds()
        if len(idle) >= 2:
            missing.append(f"nothing new (no file created or changed, no new memory) in rounds {idle[0]}-{idle[-1]}")
        return missing

    def _look(self, round_no: int, output: Path, logs: Path, topic: str, stats) -> list[str]:
        where = [] if Path(logs) == Path("logs") else ["--log-dir", str(logs)]
        loop = next((w for w in self.warnings if w.what == "loop"), None)
        idle = self.idle_rounds()
        if loop is not None:
            rounds = f"{max(1, loop.round - _streak(loop.message) + 1)}-{loop.round}"
            look = ["azclaw show", *where, "--round", rounds, "--agent", loop.agent]
        elif len(idle) >= 2:
            look = ["azclaw show", *where, "--round", f"{idle[0]}-{idle[-1]}"]
        else:
            look = ["azclaw show", *where, "--round", str(max(1, round_no))]
        report = Path(logs) / f"{topic or 'run'}_report.html"
        lines = [" ".join(shlex.quote(w) if w != "azclaw show" else w for w in look),
                 f"azclaw report{' ' + shlex.join(where) if where else ''} (writes {report})"]
        if stats.files:
            lines.append(f"{output}/")
        return lines


def _streak(message: str) -> int:
    """The turns in a row a loop warning names ("for 3 turns in a row")."""
    words = message.split()
    for i, word in enumerate(words[:-1]):
        if words[i + 1] == "turns" and word.isdigit():
            return int(word)
    return 1


def line_count(output: Path, path: str) -> str:
    """"120 lines" of a file in the output folder, read without following a
    link, regular files only and at most ``LINE_BYTES`` ("gone" when it is not there)."""
    try:
        fd = safeopen.open_beneath(Path(output).resolve(), Path(path), os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return "gone"
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return "not a file"
        data = fh.read(LINE_BYTES + 1)
    count = data[:LINE_BYTES].count(b"\n") + (1 if data and not data[:LINE_BYTES].endswith(b"\n") else 0)
    return f"{'over ' if len(data) > LINE_BYTES else ''}{_n(count, 'line')}"


def go_on(ending: Ending, command, options) -> str:
    """How to go on after ``ending``: the ``azclaw run`` line (``command``:
    its arguments), or what a program passes to ``run`` ("" for done and max_rounds)."""
    if ending.reason in ("done", "max_rounds"):
        return ""
    figures = ending.figures
    option = figures.get("option") if ending.reason == "budget" else None
    more = _more(figures) if option else None
    if command is None:  # a program
        change = f" and {option}={more!r}" if option and option != "until" and figures.get("budget") != "agent_tokens" \
            else ""
        if figures.get("budget") == "agent_tokens":
            return f"raise {figures.get('agent')}'s Agent budget_tokens, then run again with resume=True"
        if option == "until":
            return "run again with resume=True and a later until"
        return f"run again with resume=True{change}"
    words = _without(list(command), "--resume", takes_value=True)
    if option and figures.get("budget") != "agent_tokens":
        flag = "--" + option.replace("_", "-")
        words = _without(words, flag)
        if option == "until":
            return shlex.join(["azclaw", *words, "--resume"]) + f" --until HH:MM (later than {figures.get('limit')})"
        words += ["--resume", flag, str(more)]
    else:
        words.append("--resume")
    line = shlex.join(["azclaw", *words])
    if figures.get("budget") == "agent_tokens":
        return (f"raise budget_tokens of {figures.get('agent')} in the team file (now {figures.get('limit'):,}), "
                f"then: {line}")
    if ending.reason == "failed_rounds":
        return f"check the endpoints (azclaw doctor), then: {line}"
    return line


def _more(figures: dict):
    """A larger budget than the one used up: twice it."""
    limit = figures.get("limit")
    if figures.get("budget") == "time" and isinstance(limit, (int, float)):
        return short(limit * 2)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)):
        return limit
    return int(limit * 2) if isinstance(limit, int) else round(limit * 2, 2)


def _without(words: list[str], flag: str, takes_value: bool = True) -> list[str]:
    """``words`` without ``flag`` and its value (``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
            if not word.startswith("-"):
                continue
        if word == flag:
            skip = takes_value
            continue
        if word.startswith(flag + "="):
            continue
        out.append(word)
    return out


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count:,} {one if count == 1 else many or one + 's'}"
