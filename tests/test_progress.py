"""Progress measured every round (issue 21): from what the tools told, a
``progress`` line in the journal after every round, shown in the console
line of the round, ``status`` (text and JSON), ``show`` and the report."""

from __future__ import annotations

import json

from azclaw import Topic
from azclaw.progress import describe, measure
from azclaw.tools.registry import Effect
from azclaw.turn import ToolUse, Turn
from fakellm import calls, text
from helpers import journal, orchestrator, team, words

PROBED = {"title": "Probed", "coherence_probes": [{"after_round": 2, "question": "Which database?",
                                                   "expect": ["sqlite"]}]}


def scripted(request):
    """Round 1 creates a file and a memory; round 2 writes the same bytes and
    the same memory, recalls something and makes a mistake; round 3 changes the file."""
    r, step = request.round, len(request.tool_results)
    if not request.offers_tools or request.tool_names == ["recall"]:
        return text("We use SQLite." if "Which database" in request.user else words(f"{request.agent}-{r}"))
    content = "v2\n" if r >= 3 else "v1\n"
    if step == 0:
        return calls(("write_file", {"path": "app.py", "content": content}),
                     ("remember", {"title": "db", "text": "We use SQLite."}))
    if step == 2 and r == 2:  # after the two results of the first step
        return calls(("recall", {"query": "sqlite"}), ("read_file", {"path": "missing.txt"}))
    return text(words(f"{request.agent}-{r}-done"))


def test_a_round_counts_files_changed_by_content_and_memories_by_new_text(fake_llm):
    fake = fake_llm(responder=scripted)
    orch = orchestrator(team(fake.url, "dev", writers=("dev",)), topic=Topic.from_dict(PROBED, name="p"))
    orch.run(max_rounds=3)
    progress = [e for e in journal(orch.journal_path) if e["event"] == "progress"]
    rows = [(p["round"], p["files"], p["unchanged"], p["memories"], p["repeats"], p["calls"], p["failed"],
             p["recalls"], p["found"], p["scored"], p["correct"]) for p in progress]
    assert rows == [(1, ["app.py"], 0, ["db"], 0, 2, 0, 0, 0, 0, 0),
                    (2, [], 1, [], 1, 4, 1, 1, 1, 1, 1),
                    (3, ["app.py"], 0, [], 1, 2, 0, 0, 0, 0, 0)]
    kinds = [e["event"] for e in journal(orch.journal_path) if e.get("round") == 2]
    assert kinds.index("progress") == kinds.index("round_end") + 1, "after the round, its probes included"


def test_every_round_says_its_progress_in_the_console(fake_llm, workdir):
    fake = fake_llm(responder=scripted)
    orchestrator(team(fake.url, "dev", writers=("dev",))).run(max_rounds=2)
    log = (workdir / "logs" / "task.log").read_text()
    assert ("[round 1/2] progress: 1 file created or changed (app.py), 1 new memory, 2 tool calls" in log)
    assert ("[round 2/2] no progress: no file created or changed (1 write of the same bytes), no new memory "
            "(1 repeat), 4 tool calls (1 failed), recall found something 1 of 1 time") in log


def test_status_show_and_the_report_read_the_progress_back(fake_llm, azclaw, workdir):
    fake = fake_llm(responder=scripted)
    orchestrator(team(fake.url, "dev", writers=("dev",))).run(max_rounds=3)
    status = azclaw("status")
    assert "  last round  3: progress: 1 file created or changed (app.py)" in status.stdout
    data = json.loads(azclaw("status", "--json").stdout)
    assert [(p["round"], p["made"]) for p in data["progress"]] == [(1, True), (2, False), (3, True)]
    shown = azclaw("show", "--round", "2").stdout
    assert "--- round 2: no progress: no file created or changed" in shown
    assert "--- round 1" not in shown and "--- round 3" not in shown
    assert shown.rstrip().endswith("--- the run ended (max_rounds) after round 3 ---")
    report = (workdir / "logs" / "task_report.html")
    assert azclaw("report", "--charts", "svg").returncode == 0
    page = report.read_text()
    assert "Progress per round: files created or changed, new memories, recalls that found something" in page
    assert "round 2: new memories" not in page and "round 1: new memories 1" in page  # the bars, by round
    assert "<h2>Ended: max_rounds</h2>" in page and "Produced: 1 file: app.py (1 line)" in page


def test_a_stall_of_two_rounds_or_more_is_in_the_status(fake_llm, azclaw):
    fake = fake_llm(responder=lambda r: text(words(f"{r.agent}-{r.round}")))
    orchestrator(team(fake.url, "a"), no_tool_turns=0).run(max_rounds=3)
    assert "  stalled     nothing new in 3 rounds (1-3)" in azclaw("status").stdout


def test_progress_reads_old_journals_without_statuses_as_made():
    old = Turn("dev", 1, calls=[ToolUse("write_file", "{}", "Wrote", effect=Effect("file", "a.py")),
                                ToolUse("remember", "{}", "Remembered", effect=Effect("memory", "m"))])
    progress = measure(1, [old])
    assert progress.files == ("a.py",) and progress.memories == ("m",) and progress.made
    assert describe(progress).startswith("progress: 1 file created or changed (a.py), 1 new memory")
