"""The finish line (issue 21): a topic or a task says when the work is done;
a ``done`` call (offered only to the agent named) or a check command that
passes in the output folder, under run_python's sandbox, ends the run with
reason ``done``."""

from __future__ import annotations

import json

import pytest

from azclaw import Topic
from azclaw.tools import sandbox
from fakellm import call, text
from helpers import assert_one_error_line, journal, orchestrator, run_file, team, words

SANDBOX = pytest.mark.skipif(sandbox.sandbox_summary().startswith("none"),
                             reason="no operating-system sandbox works here: the check runs only in one")
FINISH = {"title": "Finished", "finish": {"agent": "reviewer"}}


def reviewer_done_in(round_no: int):
    def respond(request):
        if request.agent == "reviewer" and request.round == round_no and not request.tool_results:
            return call("done", {"reason": "the plan is complete and reviewed"})
        return text(words(f"{request.agent}-{request.round}-{len(request.tool_results)}"))
    return respond


def test_a_done_call_ends_the_run_with_reason_done_when_its_round_ends(fake_llm, workdir):
    fake = fake_llm(responder=reviewer_done_in(2))
    orch = orchestrator(team(fake.url, "reviewer", "writer"), topic=Topic.from_dict(FINISH, name="fin"))
    orch.run(max_rounds=20)
    assert orch.ending.reason == "done" and orch.last_round == 2
    assert orch.ending.detail == "reviewer declared the work done in round 2: the plan is complete and reviewed"
    assert {r.round for r in fake.chats} == {1, 2}
    assert [r.round for r in fake.chats_of("writer")] == [1, 2], "the round finishes: the writer took its turn"
    end = journal(orch.journal_path)[-1]
    assert (end["event"], end["reason"], end["round"]) == ("run_end", "done", 2)
    assert end["figures"] == {"agent": "reviewer", "reason": "the plan is complete and reviewed", "round": 2}
    assert "Ended after round 2: done" in end["summary"] and "To go on" not in end["summary"]


def test_done_is_offered_only_to_the_agent_the_finish_line_names(fake_llm):
    fake = fake_llm(responder=reviewer_done_in(1))
    orchestrator(team(fake.url, "reviewer", "writer"), topic=Topic.from_dict(FINISH, name="fin")).run(max_rounds=3)
    assert all("done" in r.tool_names for r in fake.chats_of("reviewer") if r.offers_tools)
    assert not any("done" in r.tool_names for r in fake.chats_of("writer"))
    plain = fake_llm(responder=reviewer_done_in(1))
    orchestrator(team(plain.url, "reviewer"), log_dir="plain/logs").run(max_rounds=1)
    assert not any("done" in r.tool_names for r in plain.chats), "no finish line: no done tool"


def test_a_done_call_of_another_agent_is_refused_as_data(fake_llm):
    def respond(request):
        if request.agent == "writer" and not request.tool_results:
            return call("done", {"reason": "I say so"})
        return text(words(f"{request.agent}-{request.round}-{len(request.tool_results)}"))
    fake = fake_llm(responder=respond)
    orch = orchestrator(team(fake.url, "reviewer", "writer"), topic=Topic.from_dict(FINISH, name="fin"))
    orch.run(max_rounds=2)
    assert orch.ending.reason == "max_rounds"
    assert "ERROR: unknown tool 'done'" in fake.chats_of("writer")[1].tool_results[0]


def test_done_agent_through_the_cli_exits_0_with_reason_done(fake_llm, azclaw, workdir):
    fake = fake_llm(responder=reviewer_done_in(3))
    proc = azclaw("run", "--task", "Plan it", "--agents", "planner,reviewer", "--endpoint", fake.url,
                  "--done-agent", "reviewer")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(azclaw("status", "--json").stdout)["reason"] == "done"
    assert journal(run_file(workdir / "logs", "_journal.jsonl"))[-1]["round"] == 3


def test_a_done_agent_that_is_not_in_the_team_is_one_error_line(azclaw, fake_llm):
    fake = fake_llm()
    proc = azclaw("run", "--task", "T", "--agents", "a,b", "--endpoint", fake.url, "--done-agent", "reviewer")
    assert "a, b" in assert_one_error_line(proc, "done_agent", "'reviewer'")
    assert not fake.chats


def writes_test_in(round_no: int, passing: bool = True):
    def respond(request):
        if request.agent == "developer" and request.round == round_no and not request.tool_results:
            return call("write_file", {"path": "test_app.py", "content": f"def test_it():\n    assert {passing}\n"})
        if request.agent == "developer" and not request.tool_results:
            return call("write_file", {"path": f"notes{request.round}.txt", "content": "a note\n"})
        return text(words(f"{request.agent}-{request.round}-{len(request.tool_results)}"))
    return respond


@SANDBOX
def test_a_check_that_passes_after_a_round_ends_the_run(fake_llm, azclaw, workdir):
    fake = fake_llm(responder=writes_test_in(3))
    proc = azclaw("run", "--task", "Write a tested app", "--agents", "developer", "--endpoint", fake.url,
                  "--max-rounds", "10", "--finish-check", "python -m pytest -q -p no:cacheprovider")
    assert proc.returncode == 0, proc.stderr
    lines = journal(run_file(workdir / "logs", "_journal.jsonl"))
    checks = [(e["round"], e["ok"]) for e in lines if e["event"] == "finish_check"]
    assert checks == [(1, False), (2, False), (3, True)], "after every round that changed the output folder"
    assert "1 passed" in [e for e in lines if e["event"] == "finish_check"][-1]["output"]
    end = lines[-1]
    assert (end["reason"], end["round"]) == ("done", 3)
    assert end["detail"] == "`python -m pytest -q -p no:cacheprovider` passed after round 3"
    assert "finish check after round 1: `python -m pytest -q -p no:cacheprovider` failed" in proc.stderr


@SANDBOX
def test_a_done_call_is_confirmed_by_the_check_or_refused_and_the_run_goes_on(fake_llm, workdir):
    def respond(request):
        if request.agent == "developer" and not request.tool_results:
            return call("write_file", {"path": "test_app.py",
                                       "content": f"def test_it():\n    assert {request.round >= 3}\n"})
        if request.agent == "reviewer" and not request.tool_results:
            return call("done", {"reason": f"tests written in round {request.round}"})
        return text(words(f"{request.agent}-{request.round}-{len(request.tool_results)}"))
    fake = fake_llm(responder=respond)
    topic = Topic.from_dict({"title": "Checked", "finish": {"agent": "reviewer", "check": "python -m pytest -q"}},
                            name="checked")
    orch = orchestrator(team(fake.url, "developer", "reviewer", writers=("developer",)), topic=topic)
    orch.run(max_rounds=10)
    assert orch.ending.reason == "done" and orch.last_round == 3
    refused = fake.chats_of("reviewer")[1].tool_results[0]
    assert refused.startswith("NOT DONE: the check `python -m pytest -q` failed (exit code 1); the run goes on.")
    assert "1 failed" in refused
    lines = journal(orch.journal_path)
    assert [(e["round"], e["ok"]) for e in lines if e["event"] == "finish_check"] == [(1, False), (2, False),
                                                                                      (3, True)]
    assert orch.ending.detail.endswith("tests written in round 3; `python -m pytest -q` passed")


def test_a_check_with_run_python_off_is_one_error_line(azclaw, fake_llm):
    proc = azclaw("run", "--task", "T", "--agents", "a", "--endpoint", fake_llm().url, "--no-run-python",
                  "--finish-check", "python -m pytest")
    assert_one_error_line(proc, "finish check", "run_python is off")
