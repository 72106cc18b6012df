"""A one-file HTML report of a run, charts embedded, to open and to share.

Charts: the context each agent sent per round (the flat line that is the
point of memory-first), generation speed per round, memories stored over
time, tool calls per round; then the per-agent table, the probe answers with
the coherence score, the last errors and the sessions of the run.

Charts are drawn with matplotlib when it is installed (``pip install
'azclaw[report]'``) and embedded as PNG; without it they are hand-written
inline SVG, so the core never needs it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .errors import ConfigError
from .journal import current_run, read_journal, unique_turns
from .status import RunStatus, _duration, find_journal, status_from_events

CHART_ENGINES = ("auto", "matplotlib", "svg")
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
ANSWER_CHARS = 600


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


def build_report(log_dir: str | Path = "logs", out: str | Path | None = None, charts: str = "auto") -> Path:
    """Write the HTML report of the newest run in ``log_dir`` (default file:
    ``<log_dir>/<topic>_report.html``) and return its path. ``charts`` is
    "auto" (matplotlib if installed), "matplotlib" or "svg"."""
    if charts not in CHART_ENGINES:
        raise ConfigError(f"charts: {charts!r} is not one of {', '.join(CHART_ENGINES)}")
    journal = find_journal(log_dir)
    events = current_run(read_journal(journal))
    status = status_from_events(events, journal)
    engine = _engine(charts)
    page = render_html(status, events, engine)
    target = Path(out) if out else journal.with_name(f"{status.topic or 'run'}_report.html")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def _engine(charts: str) -> str:
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


# -- the data -----------------------------------------------------------------

def build_charts(events: list[dict], agents: list[str]) -> list[Chart]:
    """The four charts of a run's journal events."""
    turns = unique_turns(events)
    rounds = sorted({int(t.get("round") or 0) for t in turns})
    names = list(agents) + sorted({str(t.get("agent")) for t in turns} - set(agents))
    at = {(int(t.get("round") or 0), str(t.get("agent"))): t for t in turns}
    start = next((e for e in reversed(events) if e.get("event") == "run_start"), {})
    phases = []
    for p in start.get("phases") or []:
        try:
            phases.append((int(p["rounds"][0]), str(p["name"])))
        except (KeyError, TypeError, ValueError, IndexError):
            continue

    def per_agent(value) -> dict[str, list[float | None]]:
        return {n: [value(at[(r, n)]) if (r, n) in at else None for r in rounds] for n in names}

    context = per_agent(_context_tokens)
    speed = per_agent(lambda t: float(t.get("tokens_per_second") or 0))
    memories: dict[str, list[float | None]] = {}
    for n in names:
        total, line = 0, []
        for r in rounds:
            total += len((at.get((r, n)) or {}).get("memories") or [])
            line.append(total)
        memories[n] = line
    if len(names) > 1:
        memories["team"] = [sum(memories[n][i] or 0 for n in names) for i in range(len(rounds))]
    tools: dict[str, list[float | None]] = {}
    for i, r in enumerate(rounds):
        for n in names:
            for tool, count in ((at.get((r, n)) or {}).get("tool_calls") or {}).items():
                tools.setdefault(tool, [0] * len(rounds))[i] += int(count)
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


def _context_tokens(turn: dict) -> float:
    if turn.get("context_tokens"):
        return float(turn["context_tokens"])
    # journals before version 2: the turn's prompt tokens spread over its requests
    return float(turn.get("prompt_tokens") or 0) / max(1, int(turn.get("requests") or 1))


# -- the page -----------------------------------------------------------------

def render_html(status: RunStatus, events: list[dict], engine: str = "svg") -> str:
    """The report as one HTML document with nothing to fetch."""
    charts = build_charts(events, [a.name for a in status.agents])
    draw = _matplotlib_img if engine == "matplotlib" else svg_chart
    figures = "\n".join(f'<figure class="chart"><figcaption>{_e(c.title)}</figcaption>{draw(c)}</figure>'
                        for c in charts if c.rounds and c.series) or "<p>No finished turns yet.</p>"
    tokens = sum(a.tokens for a in status.agents)
    cards = [("State", status.state), ("Rounds", f"{status.round} of {status.last_round}"),
             ("Elapsed", _duration(status.elapsed)), ("Tokens", f"{tokens:,}"),
             ("Memories", str(sum(a.memories for a in status.agents))),
             ("Tool calls", str(sum(a.tool_call_count for a in status.agents))),
             ("Files", str(len({f for a in status.agents for f in a.files}))),
             ("Errors", str(sum(a.errors for a in status.agents))),
             ("Coherence", str(status.coherence))]
    card_html = "".join(f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>'
                        for k, v in cards)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>azclaw report: {_e(status.title or status.topic)}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>{_e(status.title or status.topic)}</h1>
<p class="sub">azclaw run <code>{_e(status.topic)}</code> &middot; started {_e(status.started[:19].replace("T", " "))} UTC
&middot; {status.sessions} session{'s' if status.sessions != 1 else ''} &middot; journal <code>{_e(status.journal)}</code></p>
</header>
<section class="cards">{card_html}</section>
<h2>Charts</h2>
<p class="note">Rounds on the horizontal axis{'; dashed lines mark where a phase begins' if charts and charts[0].phases else ''}.
A flat first chart means each request stayed the same size however long the run went.</p>
<section class="charts">
{figures}
</section>
<h2>Agents</h2>
{_agents_table(status)}
<h2>Coherence probes: {_e(status.coherence)}</h2>
{_probes_table(status)}
{_errors(status)}
<h2>Sessions</h2>
{_sessions(events, status)}
<footer>Generated by azclaw {__version__} on {generated}; charts: {_e(engine)}.</footer>
</body>
</html>
"""


def _agents_table(s: RunStatus) -> str:
    head = ("<tr><th>agent</th><th>turns</th><th>prompt tokens</th><th>completion tokens</th>"
            "<th>avg tok/s</th><th>tool calls</th><th>memories</th><th>files</th><th>errors</th></tr>")
    rows = []
    for a in s.agents:
        by_tool = ", ".join(f"{k} {v}" for k, v in sorted(a.tool_calls.items(), key=lambda kv: -kv[1]))
        rows.append(f"<tr><td>{_e(a.name)}</td><td>{a.turns}</td><td>{a.prompt_tokens:,}</td>"
                    f"<td>{a.completion_tokens:,}</td><td>{a.tokens_per_second:.1f}</td>"
                    f'<td title="{_e(by_tool)}">{a.tool_call_count}</td><td>{a.memories}</td>'
                    f"<td>{len(a.files)}</td><td>{a.errors}</td></tr>")
    return f'<table class="num">{head}{"".join(rows)}</table>'


def _probes_table(s: RunStatus) -> str:
    if not s.probes:
        return "<p>No probe was asked in this run.</p>"
    rows = []
    for p in s.probes:
        verdict = {True: ('ok', "correct"), False: ('bad', "wrong"), None: ('', "not scored")}[p.get("correct")]
        answer = str(p.get("answer") or "")
        shown = _e(answer[:ANSWER_CHARS]) + (f'<details><summary>full answer</summary>{_e(answer)}</details>'
                                              if len(answer) > ANSWER_CHARS else "")
        expect = _e(", ".join(p.get("expect") or [])) or "&ndash;"
        rows.append(f"<tr><td>{p.get('round')}</td><td>{_e(p.get('agent'))}</td><td>{_e(p.get('question'))}</td>"
                    f"<td>{expect}</td><td class=\"answer\">{shown}</td>"
                    f'<td class="{verdict[0]}">{verdict[1]}</td></tr>')
    return ("<table><tr><th>after round</th><th>agent</th><th>question</th><th>expected</th><th>answer</th>"
            f"<th>score</th></tr>{''.join(rows)}</table>")


def _errors(s: RunStatus) -> str:
    if not s.last_errors:
        return ""
    items = "".join(f"<li>round {e['round']}, {_e(e['agent'])}: {_e(e['error'])}</li>" for e in s.last_errors)
    return f"<h2>Last errors</h2><ul class=\"errors\">{items}</ul>"


def _sessions(events: list[dict], status: RunStatus) -> str:
    ends = {e.get("run"): e for e in events if e.get("event") == "run_end"}
    starts = [e for e in events if e.get("event") == "run_start"]
    rows = []
    for e in starts:
        end = ends.get(e.get("run"))
        how = "resumed from round %s" % e["resumed_from"] if e.get("resumed_from") is not None else "fresh start"
        if end:
            finish = f"{end.get('reason')} after round {end.get('round')}"
        elif e is starts[-1] and status.state in ("running", "unknown"):
            finish = status.state
        else:
            finish = "killed or crashed (no run_end)"
        rows.append(f"<tr><td>{_e(str(e.get('time', ''))[:19].replace('T', ' '))}</td><td>{_e(how)}</td>"
                    f"<td>{e.get('first_round')}&ndash;{e.get('last_round')}</td><td>{_e(finish)}</td>"
                    f"<td>{_e(e.get('pid', ''))}</td></tr>")
    return ("<table><tr><th>started (UTC)</th><th>how</th><th>rounds</th><th>ended</th><th>pid</th></tr>"
            f"{''.join(rows)}</table>")


# -- charts: matplotlib ---------------------------------------------------------

def _matplotlib_img(chart: Chart) -> str:
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
    ax.set_ylim(0, top * 1.08 if top > 0 else 1)  # from zero: a flat line must look flat
    if x:
        ax.set_xlim(min(x) - 0.6, max(x) + 0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
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
    ymax, ystep = nice_scale(max(tops, default=0), integer=chart.integer)
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


def _e(value) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1000px; margin: 24px auto; padding: 0 16px; }
h1 { margin: 0 0 4px; font-size: 24px; }
h2 { margin: 28px 0 8px; font-size: 18px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub, .note, footer { color: #666; font-size: 13px; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 16px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; min-width: 90px; }
.card .k { color: #666; font-size: 12px; } .card .v { font-size: 16px; font-weight: 600; }
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
