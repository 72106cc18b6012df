"""The final summary (issue 21): why the run ended, what the team produced
(files with line counts, the titles of its memories), what it did not, what
to look at and how to go on; printed last, kept in the journal's run_end."""

from __future__ import annotations

import os

from azclaw.events import Ending
from azclaw.outcome import go_on, line_count
from azclaw.options import RunOptions
from fakellm import call, calls, text
from helpers import journal, orchestrator, team, words


def working(request):
    r, step = request.round, len(request.tool_results)
    if request.agent == "developer" and step == 0 and r == 1:
        return calls(("write_file", {"path": "app.py", "content": "import db\n\nprint('todo')\n"}),
                     ("write_file", {"path": "db.py", "content": "DB = 'todo.db'"}))
    if request.agent == "architect" and step == 0:
        return call("remember", {"title": f"decision-{r}", "text": words(f"decision-{r}")})
    return text(words(f"{request.agent}-{r}-{step}"))


def test_the_summary_says_what_was_produced_what_was_not_and_what_to_look_at(fake_llm, workdir, capsys):
    fake = fake_llm(responder=working)
    orch = orchestrator(team(fake.url, "architect", "developer", "reviewer", writers=("developer",)), verbose=True,
                        no_tool_turns=0)
    orch.run(max_rounds=3)
    summary = orch.summary()
    lines = summary.splitlines()
    assert lines[0] == "Ended after round 3: max_rounds (round 3 of 3)"
    assert "Produced: 2 files: app.py (3 lines), db.py (1 line)" in lines
    assert "          3 memories stored under 3 titles: decision-1, decision-2, decision-3" in lines
    assert "Not done: reviewer called no tool in its 3 turns" in lines
    assert lines[-1] == "Look at:  azclaw show --round 3 | azclaw report (writes logs/task_report.html) | output/"
    assert not any(line.startswith("To go on") for line in lines), "a run that ended as planned"
    assert journal(orch.journal_path)[-1]["summary"] == summary
    assert capsys.readouterr().err.rstrip().endswith(summary), "printed last"


def test_a_run_stopped_by_its_stop_file_says_how_to_go_on(fake_llm, workdir):
    def stop_in_round_2(request):
        if request.round == 2:
            (workdir / "STOP").write_text("")
        return text(words(f"{request.agent}-{request.round}"))
    fake = fake_llm(responder=stop_in_round_2)
    orch = orchestrator(team(fake.url, "a"), log_dir="runs/logs")
    orch.run(max_rounds=5)
    lines = orch.summary().splitlines()
    assert lines[0] == "Ended after round 2: stopped (STOP file STOP)"
    assert "Produced: nothing: no file written, no memory stored" in lines
    assert "Look at:  azclaw show --log-dir runs/logs --round 1-2 | azclaw report --log-dir runs/logs (writes " \
           "runs/logs/task_report.html)" in lines
    assert lines[-1] == "To go on: run again with resume=True"


def test_an_observer_with_look_at_adds_what_to_look_at(fake_llm):
    class Diff:
        def __call__(self, event):
            return None

        def look_at(self):
            return ["git log -p output/"]
    fake = fake_llm(responder=lambda r: text(words(f"{r.agent}-{r.round}")))
    orch = orchestrator(team(fake.url, "a"), observers=[Diff()])
    orch.run(max_rounds=1)
    assert orch.summary().splitlines()[-1].endswith("| git log -p output/")


def test_the_to_go_on_line_names_the_budget_that_was_used_up():
    command = ["run", "--topic", "todo-api", "--resume", "logs/old.json", "--max-time=8h", "--quiet"]
    time = Ending("budget", "time: 8h00m of 8h00m", {"budget": "time", "limit": 28800.0, "option": "max_time"})
    assert go_on(time, command, RunOptions()) == "azclaw run --topic todo-api --quiet --resume --max-time 16h00m"
    until = Ending("budget", "until 07:00", {"budget": "until", "limit": "07:00", "option": "until"})
    assert go_on(until, ["run", "--task", "T", "--until", "07:00"], RunOptions()) == \
        "azclaw run --task T --resume --until HH:MM (later than 07:00)"
    failed = Ending("failed_rounds", "3 rounds")
    assert go_on(failed, ["run", "--task", "T"], RunOptions()) == \
        "check the endpoints (azclaw doctor), then: azclaw run --task T --resume"
    assert go_on(Ending("done"), ["run"], RunOptions()) == "" == go_on(Ending("max_rounds"), None, RunOptions())
    tokens = Ending("budget", "", {"budget": "tokens", "limit": 1000, "option": "budget_tokens"})
    assert go_on(tokens, None, RunOptions()) == "run again with resume=True and budget_tokens=2000"


def test_line_counts_read_regular_files_only_never_a_link_or_a_fifo(workdir):
    out = workdir / "output"
    out.mkdir()
    (out / "three.txt").write_text("a\nb\nc")
    os.symlink("/dev/zero", out / "zero.txt")  # a model's code could leave this: never read through it
    os.mkfifo(out / "pipe.txt")  # nor block on this
    (out / "sub").mkdir()
    os.symlink(out / "sub", out / "linked")
    (out / "sub" / "x.txt").write_text("x\n")
    assert line_count(out, "three.txt") == "3 lines"
    assert line_count(out, "zero.txt") == "gone"
    assert line_count(out, "pipe.txt") == "not a file"
    assert line_count(out, "linked/x.txt") == "gone"
    assert line_count(out, "missing.txt") == "gone"
