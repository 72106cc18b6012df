"""The charts of a run: their data from the journal's turns, drawn with
matplotlib (PNG) when it is installed, else as hand-written inline SVG.

Context sent per round (the flat line that is the point of memory-first),
generation speed per round, memories stored over time, tool calls per round,
and what each round got done (``progress_chart``, from the journal's
``progress`` lines).
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field

from ..turn import Turn
from .common import escape as _e

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class Chart:
    """One chart's data: ``series`` maps a label to one value per round
    (None where there is none); ``kind`` is "line" or "bars" (stacked)."""

    title: str
    ylabel: str
    rounds: list[int]
    series: dict[str, list[float | None]] = field(default_factory=dict)
    kind: str = "line"
    phases: list[tuple[int, str]] = field(default_factory=list)  # (first round, name)
    dashed: set[str] = field(default_factory=set)  # labels drawn dashed (totals)
    integer: bool = False  # counts: whole-number ticks only
    ymax: float = 0.0  # the top of the scale at least this (charts side by side share one scale)


# -- the data -----------------------------------------------------------------

def build_charts(turns: list[Turn], agents: list[str], phases: list[tuple[int, str]] = ()) -> list[Chart]:
    """The four charts of a run's turns (one per round and agent)."""
    rounds = sorted({t.round for t in turns})
    names = list(agents) + sorted({t.agent for t in turns} - set(agents))
    at = {(t.round, t.agent): t for t in turns}
    phases = list(phases)

    def per_agent(value) -> dict[str, list[float | None]]:
        return {n: [value(at[(r, n)]) if (r, n) in at else None for r in rounds] for n in names}

    context = per_agent(_context_tokens)
    speed = per_agent(lambda t: float(t.tokens_per_second))
    memories: dict[str, list[float | None]] = {}
    for n in names:
        total, line = 0, []
        for r in rounds:
            total += len(at[(r, n)].memories) if (r, n) in at else 0
            line.append(total)
        memories[n] = line
    if len(names) > 1:
        memories["team"] = [sum(memories[n][i] or 0 for n in names) for i in range(len(rounds))]
    tools: dict[str, list[float | None]] = {}
    for i, r in enumerate(rounds):
        for n in names:
            for tool, count in (at[(r, n)].tools if (r, n) in at else {}).items():
                tools.setdefault(tool, [0] * len(rounds))[i] += count
    tools = dict(sorted(tools.items(), key=lambda kv: -sum(kv[1])))
    return [
        Chart("Context sent per round: prompt tokens of each agent's largest request", "prompt tokens",
              rounds, context, phases=phases),
        Chart("Generation speed per round", "tokens / second", rounds, speed, phases=phases),
        Chart("Memories stored over time (cumulative)", "memories", rounds, memories, phases=phases,
              dashed={"team"}, integer=True),
        Chart("Tool calls per round, by tool", "tool calls", rounds, tools, kind="bars", phases=phases,
              integer=True),
    ]


def progress_chart(progress, phases: list[tuple[int, str]] = ()) -> Chart:
    """What each round got done (``RoundProgress``): files created or changed,
    memories with new text and recalls that found something, stacked; a round
    with no bar made nothing."""
    rounds = sorted(p.round for p in progress)
    by_round = {p.round: p for p in progress}
    series = {"files created or changed": [float(len(by_round[r].files)) for r in rounds],
              "new memories": [float(len(by_round[r].memories)) for r in rounds],
              "recalls that found": [float(by_round[r].found) for r in rounds]}
    return Chart("Progress per round: files created or changed, new memories, recalls that found something",
                 "count", rounds,
                 {k: v for k, v in series.items() if any(v)} or {"files created or changed": [0.0] * len(rounds)},
                 kind="bars", phases=list(phases), integer=True)


def phases_of(run) -> list[tuple[int, str]]:
    """(first round, name) of each phase of a run (a ``RunLog``)."""
    start = run.start
    return [(p.start, p.name) for p in start.phases] if start else []


def _context_tokens(turn: Turn) -> float:
    if turn.context_tokens:
        return float(turn.context_tokens)
    # journals before version 2: the turn's prompt tokens spread over its requests
    return float(turn.prompt_tokens) / max(1, turn.requests)


def matplotlib_img(chart: Chart) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    # Figure + Agg canvas directly: no pyplot, so no global backend is chosen
    # for a program that imports azclaw.
    fig = Figure(figsize=(9.6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = chart.rounds
    bottom = [0.0] * len(x)  # stacked bars: their tops, when done
    handles = []  # one per series, for the legend
    if chart.kind == "bars":
        for i, (label, values) in enumerate(chart.series.items()):
            heights = [v or 0 for v in values]
            handles.append(ax.bar(x, heights, bottom=bottom, width=0.8, color=COLORS[i % len(COLORS)]))
            bottom = [b + h for b, h in zip(bottom, heights)]
    else:
        for i, (label, values) in enumerate(chart.series.items()):
            ys = [float("nan") if v is None else v for v in values]
            handles += ax.plot(x, ys, color="#333333" if label in chart.dashed else COLORS[i % len(COLORS)],
                               linestyle="--" if label in chart.dashed else "-", linewidth=1.8,
                               marker="o" if len(x) <= 40 else None, markersize=3)
    for start, name in _visible_phases(chart):
        if start - 0.5 > min(x) - 0.5:
            ax.axvline(start - 0.5, color="#999999", linestyle=":", linewidth=1)
        ax.annotate(name, (max(start, min(x)) - 0.5, 1), xycoords=("data", "axes fraction"), xytext=(3, -3),
                    textcoords="offset points", va="top", fontsize=8, color="#666666", parse_math=False)
    top = max((v or 0 for v in (bottom if chart.kind == "bars" else
                                   [v for vs in chart.series.values() for v in vs])), default=0)
    top = max(top, chart.ymax)
    ax.set_ylim(0, top * 1.08 if top > 0 else 1)  # from zero: a flat line must look flat
    if x:
        ax.set_xlim(min(x) - 0.6, max(x) + 0.6)
    ax.set_xticks(x_ticks(x))  # rounds are whole numbers, also when there are one or two
    if chart.integer:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if float(v).is_integer() else f"{v:,g}"))
    ax.set_xlabel("round")
    ax.set_ylabel(chart.ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if chart.series:
        # labels are tool names a model chose: "$...$" must not be parsed as
        # math (a bad formula raises), and a leading "_" would hide the entry
        legend = ax.legend(handles, [(" " + n if n.startswith("_") else n) for n in chart.series],
                           loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)
        for text in legend.get_texts():
            text.set_parse_math(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(chart.title)}" src="data:image/png;base64,{data}">'


# -- charts: hand-written SVG ---------------------------------------------------

W, H = 900, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 16, 44


def svg_chart(chart: Chart) -> str:
    """The chart as inline SVG, drawn by hand (no dependencies)."""
    x = chart.rounds
    if chart.kind == "bars":
        tops = [sum(v[i] or 0 for v in chart.series.values()) for i in range(len(x))]
    else:
        tops = [v for values in chart.series.values() for v in values if v is not None]
    # headroom, as matplotlib's: the phase names at the top must not sit on the lines
    ymax, ystep = nice_scale(max(max(tops, default=0) * (1.08 if _visible_phases(chart) else 1), chart.ymax), integer=chart.integer)
    x0, x1 = min(x, default=0) - 0.6, max(x, default=1) + 0.6
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(v: float) -> float:
        return LEFT + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return TOP + ph - v / ymax * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" '
           f'font-family="Helvetica, Arial, sans-serif" font-size="12"><title>{_e(chart.title)}</title>',
           f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>']
    steps = int(round(ymax / ystep))
    for i in range(steps + 1):
        v = i * ystep
        y = sy(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{_num(v, ystep)}</text>')
    for r in x_ticks(x):
        px = sx(r)
        out.append(f'<line x1="{px:.1f}" y1="{TOP + ph}" x2="{px:.1f}" y2="{TOP + ph + 4}" stroke="#444"/>')
        out.append(f'<text x="{px:.1f}" y="{TOP + ph + 17}" text-anchor="middle" fill="#444">{r}</text>')
    out.append(f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="#444"/>')
    out.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="#444"/>')
    out.append(f'<text x="{LEFT + pw / 2:.1f}" y="{H - 8}" text-anchor="middle" fill="#222">round</text>')
    out.append(f'<text transform="translate(16 {TOP + ph / 2:.1f}) rotate(-90)" text-anchor="middle" '
               f'fill="#222">{_e(chart.ylabel)}</text>')
    for start, name in _visible_phases(chart):
        px = sx(max(start, min(x)) - 0.5)
        if start > min(x):
            out.append(f'<line x1="{px:.1f}" y1="{TOP}" x2="{px:.1f}" y2="{TOP + ph}" stroke="#999" '
                       'stroke-dasharray="2 3"/>')
        out.append(f'<text x="{px + 3:.1f}" y="{TOP + 11}" font-size="10" fill="#666">{_e(name)}</text>')
    labels = list(chart.series)
    if chart.kind == "bars":
        width = 0.8 * pw / (x1 - x0)  # a round is one unit wide
        base = [0.0] * len(x)
        for i, label in enumerate(labels):
            color = COLORS[i % len(COLORS)]
            for j, v in enumerate(chart.series[label]):
                if not v:
                    continue
                top = base[j] + v
                out.append(f'<rect x="{sx(x[j]) - width / 2:.1f}" y="{sy(top):.1f}" width="{width:.1f}" '
                           f'height="{sy(base[j]) - sy(top):.1f}" fill="{color}"><title>round {x[j]}: '
                           f'{_e(label)} {_num(v, 1)}</title></rect>')
                base[j] = top
    else:
        for i, label in enumerate(labels):
            dashed = label in chart.dashed
            color = "#333" if dashed else COLORS[i % len(COLORS)]
            dash = ' stroke-dasharray="6 4"' if dashed else ""
            for segment in _segments(x, chart.series[label]):
                points = " ".join(f"{sx(r):.1f},{sy(v):.1f}" for r, v in segment)
                out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.8"'
                           f'{dash} stroke-linejoin="round"/>')
                if len(x) <= 40 and not dashed:
                    out.extend(f'<circle cx="{sx(r):.1f}" cy="{sy(v):.1f}" r="2.5" fill="{color}">'
                               f'<title>round {r}: {_e(label)} {_num(v, 0.1)}</title></circle>' for r, v in segment)
    for i, label in enumerate(labels):
        y = TOP + 8 + i * 18
        color = "#333" if label in chart.dashed else COLORS[i % len(COLORS)]
        out.append(f'<rect x="{LEFT + pw + 14}" y="{y - 6}" width="14" height="10" fill="{color}"/>')
        out.append(f'<text x="{LEFT + pw + 34}" y="{y + 3}" fill="#222">{_e(label[:16])}</text>')
    out.append("</svg>")
    return "".join(out)


def nice_scale(top: float, ticks: int = 5, integer: bool = False) -> tuple[float, float]:
    """An axis end at or above ``top`` and a round step (1, 2, 2.5 or 5
    times a power of ten; whole numbers only when ``integer``)."""
    if top <= 0:
        return (1.0, 1.0) if integer else (1.0, 0.2)
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    steps = [m * power for m in (1, 2, 2.5, 5, 10)]
    if integer:
        steps = [s for s in steps if s >= 1 and float(s).is_integer()] or [1.0]
    step = next((s for s in steps if s >= raw), steps[-1])
    return math.ceil(top / step + 1e-9) * step, step


def _visible_phases(chart: Chart) -> list[tuple[int, str]]:
    """Phases that begin within the charted rounds, and the one the chart starts in."""
    if not chart.rounds:
        return []
    lo, hi = min(chart.rounds), max(chart.rounds)
    inside = [(s, n) for s, n in chart.phases if lo < s <= hi]
    before = [(s, n) for s, n in chart.phases if s <= lo]
    return ([max(before)] if before else []) + inside


def x_ticks(rounds: list[int], most: int = 12) -> list[int]:
    if not rounds:
        return []
    lo, hi = min(rounds), max(rounds)
    span = hi - lo + 1
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 10**9) if span / s <= most)
    first = lo if step == 1 else ((lo + step - 1) // step) * step
    return list(range(first, hi + 1, step))


def _segments(x: list[int], values: list[float | None]) -> list[list[tuple[int, float]]]:
    segments, current = [], []
    for r, v in zip(x, values):
        if v is None:
            if current:
                segments.append(current)
            current = []
        else:
            current.append((r, v))
    if current:
        segments.append(current)
    return segments


def _num(v: float, step: float) -> str:
    if float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:,.{max(1, -math.floor(math.log10(step))) if step < 1 else 1}f}"
