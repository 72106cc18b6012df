"""The comparison of runs of one topic in several context modes, read from
their journals (``azclaw bench`` writes one run per mode folder).

Per round and mode, the mean over the round's turns of: prompt tokens (all
requests of a turn, as the server counted them), prompt tokens evaluated
(the prompt tokens less those the server took from its cache: the work a
request costs, which the machine's load does not change), the largest request's
prompt tokens, seconds (wall time from the turn's start to its end, tools
included), generation tokens/s (completion tokens / seconds waiting for
the model, which holds the prompt's evaluation) and end-to-end tokens/s
(completion tokens / the turn's wall seconds); prompt tokens the server took
from its cache when the journal has them (``cached_tokens``); messages
dropped to fit the context budget. Per mode: the round where it first had
to drop messages (hit the context limit), probe scores, time and tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AzclawError
from ..options import RunFolder
from ..stats import Coherence
from ..turn import Turn
from .charts import Chart, build_charts, phases_of
from .reader import RunLog, find_journal
from .status import status_of


@dataclass
class RoundFigures:
    """One round of one mode, summed over its turns (probes apart)."""

    round: int
    turns: int = 0
    prompt_tokens: int = 0
    context_tokens: int = 0  # the largest request of each turn
    completion_tokens: int = 0
    model_seconds: float = 0.0  # waiting for the model
    seconds: float = 0.0  # wall time of the turns
    cached_tokens: int | None = None  # None: the journal does not say
    dropped: int = 0  # messages left out, summed over the round's turns

    def per_turn(self, value: float) -> float:
        return value / self.turns if self.turns else 0.0

    @property
    def evaluated(self) -> int:
        """Prompt tokens the server evaluated (all of them when it does not say what it cached)."""
        return self.prompt_tokens - (self.cached_tokens or 0)

    @property
    def generation_tps(self) -> float:
        return self.completion_tokens / self.model_seconds if self.model_seconds > 0 else 0.0

    @property
    def end_to_end_tps(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ModeRun:
    """What one mode's run did, from its journal."""

    mode: str
    folder: Path
    journal: Path | None = None
    title: str = ""
    state: str = "not run"  # the run_end reason, running, killed, or not run
    last_round: int = 0  # the round the run was asked to reach
    rounds: list[RoundFigures] = field(default_factory=list)
    seconds: float = 0.0  # the run's elapsed time, every session
    prompt_tokens: int = 0  # turns and probe answers
    completion_tokens: int = 0
    cached_tokens: int | None = None
    dropped: int = 0
    limit_round: int | None = None  # the first round that had to drop messages
    coherence: Coherence = field(default_factory=Coherence)
    probes: list[dict] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    phases: list[tuple[int, str]] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)

    @property
    def memories(self) -> int:
        return sum(len(t.memories) for t in self.turns)

    @property
    def tool_calls(self) -> int:
        return sum(t.tool_calls for t in self.turns)

    @property
    def done(self) -> int:
        """The last round the journal shows whole."""
        return max((r.round for r in self.rounds), default=0)

    def at(self, round_no: int) -> RoundFigures | None:
        return next((r for r in self.rounds if r.round == round_no), None)


@dataclass
class Ratio:
    """A mode against the baseline (the first mode) over the rounds both
    finished, ``first`` to ``last``: per-turn figures, mode / baseline."""

    mode: ModeRun
    base: ModeRun
    first: int
    last: int
    evaluated: float  # prompt tokens the server evaluated (the headline: load does not change it)
    evaluated_last: float  # the same at the last round
    prompt: float
    seconds: float  # wall seconds: these follow the machine's load
    cached_known: bool  # both servers said what they took from their cache

    def line(self) -> str:
        rounds = f"round {self.last}" if self.first == self.last else f"rounds {self.first}-{self.last}"
        known = "" if self.cached_known else " (the server did not say what it cached: all prompt tokens)"
        return (f"{rounds}, {self.mode.mode} against {self.base.mode}: {self.evaluated:.1f}x the prompt tokens "
                f"evaluated per turn{known}, {self.evaluated_last:.1f}x at round {self.last}; "
                f"{self.prompt:.1f}x the prompt tokens per turn, {self.seconds:.1f}x the seconds per turn")


@dataclass
class Comparison:
    title: str
    modes: list[ModeRun]

    @property
    def common_round(self) -> int | None:
        """The last round that every mode that ran has finished."""
        rounds = self.common_rounds
        return rounds[-1] if rounds else None

    def notes(self) -> list[str]:
        """What a reader must know to read the figures right."""
        return [f"{m.mode}: the team stored no memories and called no tools in {m.done} rounds (the model did "
                "not use them), so nothing it answered came from memory" for m in self.modes
                if m.rounds and not m.memories and not m.tool_calls]

    @property
    def common_rounds(self) -> list[int]:
        """The rounds every mode that ran has finished."""
        ran = [m for m in self.modes if m.rounds]
        if len(ran) < 2:
            return []
        return sorted(set.intersection(*({r.round for r in m.rounds} for m in ran)))

    def ratios(self) -> list[Ratio]:
        """Every mode against the first, over the rounds all of them finished."""
        rounds = self.common_rounds
        ran = [m for m in self.modes if m.rounds]
        if not rounds:
            return []

        def per_turn(m: ModeRun, value) -> float:
            figures = [m.at(n) for n in rounds]
            turns = sum(r.turns for r in figures)
            return sum(value(r) for r in figures) / turns if turns else 0.0

        base, last = ran[0], rounds[-1]
        out = []
        for m in ran[1:]:
            a, b = m.at(last), base.at(last)
            out.append(Ratio(m, base, rounds[0], last,
                             _ratio(per_turn(m, lambda r: r.evaluated), per_turn(base, lambda r: r.evaluated)),
                             _ratio(a.per_turn(a.evaluated), b.per_turn(b.evaluated)),
                             _ratio(per_turn(m, lambda r: r.prompt_tokens), per_turn(base, lambda r: r.prompt_tokens)),
                             _ratio(per_turn(m, lambda r: r.seconds), per_turn(base, lambda r: r.seconds)),
                             m.cached_tokens is not None and base.cached_tokens is not None))
        return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def compare_runs(folders: dict[str, Path]) -> Comparison:
    """Read the run of each mode (``{mode: folder}``; the journal is in
    ``folder/logs``) into one comparison. A folder without a journal is a
    mode that did not run."""
    modes = [read_mode(mode, Path(folder)) for mode, folder in folders.items()]
    title = next((m.title for m in modes if m.title), "")
    return Comparison(title, modes)


def read_mode(mode: str, folder: Path) -> ModeRun:
    run = ModeRun(mode, folder)
    try:
        log = RunLog.read(find_journal(RunFolder.under(folder).logs), texts=False)
        status = status_of(log)
    except AzclawError:  # no journal: the mode did not run
        return run
    run.journal, run.title, run.state = log.path, status.title, status.reason or status.state
    run.last_round, run.seconds, run.coherence = status.last_round, status.elapsed, status.coherence
    run.probes, run.turns, run.phases = [p.row() for p in log.probes], log.turns, phases_of(log)
    run.agents = list(status.agents)
    stats = log.state.stats
    run.prompt_tokens, run.completion_tokens = stats.prompt_tokens, stats.completion_tokens
    # a server that never says what it cached gives 0 on every line: that is "not known", not "none"
    cached = any(t.cached_tokens for t in log.turns)
    by_round: dict[int, RoundFigures] = {}
    for t in log.turns:
        r = by_round.setdefault(t.round, RoundFigures(t.round))
        r.turns += 1
        r.prompt_tokens += t.prompt_tokens
        r.context_tokens += t.context_tokens or t.prompt_tokens // max(1, t.requests)
        r.completion_tokens += t.completion_tokens
        r.model_seconds += t.seconds
        r.seconds += log.walls.get((t.round, t.agent), t.seconds)
        r.dropped += t.dropped
        if cached:
            r.cached_tokens = (r.cached_tokens or 0) + t.cached_tokens
    # rounds with a round_end line (journals before version 3: every round with a turn)
    complete = set(log.rounds_done) or {t.round for t in log.turns}
    run.rounds = [by_round[n] for n in sorted(by_round) if n in complete]
    run.dropped = sum(t.dropped for t in log.turns)
    run.limit_round = min((t.round for t in log.turns if t.dropped), default=None)
    everything = log.turns + log.retried + [p.turn for p in log.probes]
    if any(t.cached_tokens for t in everything):
        run.cached_tokens = sum(t.cached_tokens for t in everything)
    return run


# -- the console table ------------------------------------------------------------

COLUMNS = ("prompt/turn", "eval/turn", "s/turn", "gen tok/s", "e2e tok/s", "dropped")


def shown_rounds(cmp: Comparison, most: int = 8) -> list[int]:
    """Round 1, every k-th round, each mode's limit round and the last."""
    every = sorted({r.round for m in cmp.modes for r in m.rounds})
    if not every:
        return []
    last = every[-1]
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 250, 500, 10**9) if last / s <= most)
    wanted = {every[0], last} | {r for r in every if r % step == 0}
    wanted |= {m.limit_round for m in cmp.modes if m.limit_round}
    return sorted(r for r in wanted if r in every)


def format_table(cmp: Comparison) -> str:
    """The comparison as plain text: figures per round, then per mode."""
    ran = [m for m in cmp.modes if m.rounds]
    lines = [f"azclaw bench: {cmp.title or 'run'}; per turn: the mean over the round's turns; eval: prompt tokens "
             "the server evaluated (not from its cache)"]
    if not ran:
        return "\n".join(lines + ["no mode finished a round"])
    width = [12, 10, 7, 10, 10, 8]
    head1 = "round " + " | ".join(f"{m.mode:<{sum(width) + len(width) - 1}}" for m in ran)
    head2 = "      " + " | ".join(" ".join(f"{c:>{w}}" for c, w in zip(COLUMNS, width)) for _ in ran)
    lines += ["", head1.rstrip(), head2]
    for n in shown_rounds(cmp):
        cells = []
        for m in ran:
            r = m.at(n)
            if r is None:
                cells.append(" ".join(f"{'-':>{w}}" for w in width))
                continue
            values = (f"{r.per_turn(r.prompt_tokens):,.0f}", f"{r.per_turn(r.evaluated):,.0f}",
                      f"{r.per_turn(r.seconds):.1f}",
                      f"{r.generation_tps:.1f}", f"{r.end_to_end_tps:.1f}", f"{r.per_turn(r.dropped):,.0f}")
            cells.append(" ".join(f"{v:>{w}}" for v, w in zip(values, width)))
        mark = " <- " + ", ".join(m.mode for m in ran if m.limit_round == n) + " hit the context limit" \
            if any(m.limit_round == n for m in ran) else ""
        lines.append(f"{n:>5} " + " | ".join(cells) + mark)
    lines += ["", summary_head()]
    lines += [summary_row(m) for m in cmp.modes]
    lines += [ratio.line() for ratio in cmp.ratios()]
    lines += [f"note: {note}" for note in cmp.notes()]
    return "\n".join(lines)


SUMMARY = (("mode", 10, "<"), ("state", 11, "<"), ("rounds", 6, ">"), ("time", 8, ">"),
           ("prompt tok", 11, ">"), ("compl. tok", 10, ">"), ("cached", 8, ">"), ("dropped", 7, ">"),
           ("limit at", 8, ">"), ("coherence", 9, "<"))


def summary_head() -> str:
    return " ".join(f"{name:{align}{w}}" for name, w, align in SUMMARY)


def summary_row(m: ModeRun) -> str:
    values = summary_values(m)
    return " ".join(f"{v:{align}{w}}" for v, (_, w, align) in zip(values, SUMMARY)).rstrip()


def summary_values(m: ModeRun) -> list[str]:
    coherence = (f"{m.coherence.correct}/{m.coherence.scored} correct" if m.coherence.scored else
                 "no probes scored" if m.coherence.asked else "no probes asked")
    return [m.mode, m.state, f"{m.done}/{m.last_round}" if m.last_round else str(m.done), duration(m.seconds),
            f"{m.prompt_tokens:,}", f"{m.completion_tokens:,}",
            "n/a" if m.cached_tokens is None else f"{m.cached_tokens:,}", f"{m.dropped:,}",
            str(m.limit_round) if m.limit_round else "-", coherence]


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


# -- charts -----------------------------------------------------------------------

def overlay_charts(cmp: Comparison) -> list[Chart]:
    """One line per mode: the figures that tell the modes apart."""
    ran = [m for m in cmp.modes if m.rounds]
    rounds = sorted({r.round for m in ran for r in m.rounds})
    phases = next((m.phases for m in ran if m.phases), [])

    def series(value) -> dict[str, list[float | None]]:
        return {m.mode: [value(m.at(n)) if m.at(n) else None for n in rounds] for m in ran}

    return [
        Chart("Prompt tokens per turn, by context mode", "prompt tokens", rounds,
              series(lambda r: r.per_turn(r.prompt_tokens)), phases=phases),
        Chart("Prompt tokens the server evaluated per turn (not from its cache)", "prompt tokens", rounds,
              series(lambda r: r.per_turn(r.evaluated)), phases=phases),
        Chart("Seconds per turn, by context mode", "seconds", rounds, series(lambda r: r.per_turn(r.seconds)),
              phases=phases),
        Chart("End-to-end tokens/s (completion tokens / turn seconds)", "tokens / second", rounds,
              series(lambda r: r.end_to_end_tps), phases=phases),
        Chart("Messages left out of a turn's request to fit the context budget", "messages", rounds,
              series(lambda r: r.per_turn(r.dropped)), phases=phases),
    ]


def side_by_side(cmp: Comparison) -> list[list[Chart]]:
    """The report's charts of each mode, a row per chart, one scale per row."""
    ran = [m for m in cmp.modes if m.rounds]
    rounds = sorted({r.round for m in ran for r in m.rounds})
    per_mode = [build_charts(m.turns, m.agents, m.phases) for m in ran]
    rows = []
    for i in range(len(per_mode[0]) if per_mode else 0):
        row = [charts[i] for charts in per_mode]
        top = max((_top(c) for c in row), default=0.0)
        for mode, chart in zip(ran, row):
            chart.title = f"{mode.mode}: {chart.title}"
            chart.ymax = top
            _pad(chart, rounds)
        rows.append(row)
    return rows


def _top(chart: Chart) -> float:
    if chart.kind == "bars":
        return max((sum(v[i] or 0 for v in chart.series.values()) for i in range(len(chart.rounds))), default=0.0)
    return max((v for vs in chart.series.values() for v in vs if v is not None), default=0.0)


def _pad(chart: Chart, rounds: list[int]) -> None:
    """Every chart of a row over the same rounds."""
    at = {r: i for i, r in enumerate(chart.rounds)}
    chart.series = {k: [vs[at[r]] if r in at else None for r in rounds] for k, vs in chart.series.items()}
    chart.rounds = list(rounds)
