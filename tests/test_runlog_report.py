"""`azclaw report`: a self-contained HTML report with its charts, with and without matplotlib."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from azclaw.errors import ConfigError
from azclaw.runlog.journal import Journal
from azclaw.events import parse
from azclaw.runlog.reader import Logged, RunLog
from azclaw.runlog.charts import Chart, build_charts, nice_scale, phases_of, svg_chart, x_ticks
from azclaw.runlog.report import build_report
from helpers import CLI_TIMEOUT
from longrun import AGENTS, EXPECTED_SCORE, LAST_ROUND, killed_and_resumed_run

CHART_TITLES = ["Context sent per round", "Progress per round", "Generation speed per round",
                "Memories stored over time", "Tool calls per round"]
SVG_NS = "{http://www.w3.org/2000/svg}"


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return killed_and_resumed_run(tmp_path_factory.mktemp("longrun"))


def svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg.*?</svg>", page, re.S)]


def test_the_report_command_writes_one_html_file_with_every_chart_and_table(run):
    result = subprocess.run([sys.executable, "-m", "azclaw", "report", "--log-dir", "logs", "--out", "r.html"],
                            cwd=run.tmp, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "azclaw: wrote r.html"
    page = (run.tmp / "r.html").read_text(encoding="utf-8")
    assert page.count('<figure class="chart">') == 5
    for title in CHART_TITLES:
        assert title in page
    if has_matplotlib():
        images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
        assert len(images) == 5 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    else:
        assert len(svgs(page)) == 5
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing to fetch
    assert f"Coherence probes: {EXPECTED_SCORE[0]}/{EXPECTED_SCORE[1]} answers correct" in page
    assert page.count('<td class="ok">correct</td>') == EXPECTED_SCORE[0]
    assert page.count('<td class="bad">wrong</td>') == EXPECTED_SCORE[1] - EXPECTED_SCORE[0]
    assert "Postgres, as the architect decided." in page and "I believe it was SQLite." in page
    for agent in AGENTS:
        assert f"<tr><td>{agent}</td><td>{LAST_ROUND}</td>" in page
    assert "resumed from round 12" in page and "killed or crashed (no run_end)" in page
    rounds = re.findall(r'<details class="round" id="round-(\d+)" data-v="\w+"( open)?>', page)
    assert rounds == [(str(r), " open" if r > LAST_ROUND - 3 else "") for r in range(1, LAST_ROUND + 1)]
    transcript = page[page.index('<section id="transcript"'):]
    assert transcript.count('<article class="turn">') == LAST_ROUND * len(AGENTS), "every turn once, none redone twice"
    assert "answering the probe &ldquo;What database engine did we choose?&rdquo;" in transcript
    assert '<summary><code>write_file</code> <span class="ok">ok</span>' in transcript


def test_without_matplotlib_the_charts_are_inline_svg_with_a_line_per_agent(run):
    path = build_report(run.logs, run.tmp / "svg.html", charts="svg")
    page = path.read_text(encoding="utf-8")
    assert "<img" not in page and "charts: svg" in page
    context, progress, speed, memories, tools = svgs(page)
    assert context.find(f"{SVG_NS}title").text.startswith("Context sent per round")
    assert progress.find(f"{SVG_NS}title").text.startswith("Progress per round"), "beside the context chart"
    assert progress.findall(f"{SVG_NS}rect"), "the rounds' bars"
    for chart in (context, speed):
        lines = chart.findall(f"{SVG_NS}polyline")
        assert len(lines) == len(AGENTS)
        assert all(len(line.get("points").split()) == LAST_ROUND for line in lines)  # no round missing
    assert len(memories.findall(f"{SVG_NS}polyline")) == len(AGENTS) + 1  # and the team's total
    labels = [t.text for t in tools.findall(f"{SVG_NS}text")]
    assert "remember" in labels and "write_file" in labels
    assert ["Design", "Build", "Review"] == [t for t in labels if t in ("Design", "Build", "Review")]


def test_with_matplotlib_the_charts_are_embedded_png(run):
    pytest.importorskip("matplotlib")
    page = build_report(run.logs, charts="matplotlib").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 5 and "charts: matplotlib" in page


def test_the_report_goes_beside_the_journal_by_default(run):
    assert build_report(run.logs, charts="svg") == run.logs / "todo_api_report.html"
    assert (run.logs / "todo_api_report.html").stat().st_size > 10_000


def test_asking_for_matplotlib_without_it_names_the_extra(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'azclaw\[report\]'"):
        build_report(run.logs, run.tmp / "x.html", charts="matplotlib")
    page = build_report(run.logs, run.tmp / "auto.html").read_text(encoding="utf-8")
    assert "charts: svg" in page and len(svgs(page)) == 5


def test_a_report_of_a_partial_run_escapes_what_the_agents_wrote(tmp_path):
    journal = Journal(tmp_path / "t_journal.jsonl")
    journal.write("run_start", topic="t", title="<b>T</b>", first_round=1, last_round=3, agents=["a", "b"],
                  resumed_from=None, pid=None)
    journal.write("turn", round=1, agent="a", context_tokens=100, tokens_per_second=5.0, tool_calls={"recall": 1})
    journal.write("turn", round=1, agent="b", context_tokens=120, tokens_per_second=4.0, tool_calls={})
    journal.write("turn", round=2, agent="a", context_tokens=110, tokens_per_second=5.5, tool_calls={})
    journal.write("probe", round=2, agent="a", question="Q?", expect=["x"], answer="<script>x</script>",
                  correct=True)
    page = build_report(tmp_path, charts="svg").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page and "&lt;b&gt;T" in page
    context = svgs(page)[0]
    points = [len(p.get("points").split()) for p in context.findall(f"{SVG_NS}polyline")]
    assert points == [2, 1]  # b has no turn in round 2: its line stops
    assert "1/1 answers correct" in page


def test_charts_hold_one_value_per_round_and_agent():
    events = [{"event": "run_start", "agents": ["a"], "phases": [{"name": "P", "rounds": [1, 9]}]},
              {"event": "turn", "round": 1, "agent": "a", "prompt_tokens": 90, "requests": 3,
               "memories": ["m1", "m2"], "tool_calls": {"remember": 2}},
              {"event": "turn", "round": 2, "agent": "a", "context_tokens": 40, "memories": ["m3"],
               "tool_calls": {"remember": 1, "recall": 1}}]
    run = RunLog.of([Logged(e) for e in map(parse, events) if e], "t_journal.jsonl")
    context, _, memories, tools = build_charts(run.turns, ["a"], phases_of(run))
    assert context.series == {"a": [30.0, 40.0]}  # a version-1 turn: prompt tokens over its requests
    assert memories.series == {"a": [2, 3]}
    assert tools.series == {"remember": [2, 1], "recall": [0, 1]}
    assert context.phases == [(1, "P")]


@pytest.mark.parametrize("top, integer, expected", [
    (0, False, (1.0, 0.2)), (0, True, (1.0, 1.0)), (12, True, (15, 5)), (2, True, (3, 1)),
    (729, False, (800, 200)), (0.9, False, (1.0, 0.2)), (67000, False, (80000, 20000)),
])
def test_axes_end_on_a_round_number_above_the_data(top, integer, expected):
    assert nice_scale(top, integer=integer) == pytest.approx(expected)


@pytest.mark.parametrize("rounds, expected", [
    ([1, 2, 3], [1, 2, 3]), (list(range(1, 25)), list(range(2, 25, 2))),
    (list(range(1, 201)), list(range(20, 201, 20))), ([], []),
])
def test_round_ticks_stay_few_and_round(rounds, expected):
    assert x_ticks(rounds) == expected


def test_an_svg_chart_is_well_formed_even_without_data():
    ET.fromstring(svg_chart(Chart("empty", "n", [1], {"a": [None]})))
    ET.fromstring(svg_chart(Chart("bars", "n", [1, 2], {"t": [0, 0]}, kind="bars", integer=True)))


@pytest.mark.parametrize("charts", ["svg", pytest.param("matplotlib", marks=pytest.mark.skipif(
    not has_matplotlib(), reason="matplotlib is not installed"))])
def test_tool_names_a_model_made_up_are_drawn_as_plain_text(tmp_path, azclaw, charts):
    # a model may call any name: "$...$" once made matplotlib parse (and fail on) a formula
    journal = Journal(tmp_path / "t_journal.jsonl")
    journal.write("run_start", topic="t", title="T", first_round=1, last_round=2, agents=["a"], resumed_from=None,
                  pid=None, phases=[{"name": "$\\frac{x$ phase", "rounds": [1, 2]}])
    for round_no in (1, 2):
        journal.write("turn", round=round_no, agent="a", context_tokens=100, tokens_per_second=5.0,
                      tool_calls={"$\\frac{a$": 1, "_hidden": 2, "<img src=x onerror=alert(1)>": 1})
    proc = azclaw("report", "--log-dir", str(tmp_path), "--charts", charts, "--out", "r.html")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
