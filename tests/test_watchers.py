"""The watchers of a run's turns (issue 21): an agent that calls no tool is
named, an agent going in circles is warned, nudged and skipped or the run
stops, a team without progress is warned and stopped when asked; a normal
run of every shipped topic trips none of them."""

from __future__ import annotations

import json

import pytest

from azclaw import Topic
from azclaw.cli import PACKAGE_TOPICS
from fakellm import call, text
from helpers import journal, orchestrator, run_file, team, words, working_team

NUDGE = "Note from the run: you repeated"


def warnings(orch, what: str | None = None) -> list[dict]:
    return [e for e in journal(orch.journal_path) if e["event"] == "warning" and (what is None or e["what"] == what)]


def circling(request):
    """Reads the same file every turn and says the same thing."""
    if request.tool_results or not request.offers_tools:
        return text("I read notes.txt again. Nothing has changed; I will read it once more next round.")
    return call("read_file", {"path": "notes.txt"})


@pytest.fixture
def notes(workdir):
    (workdir / "output").mkdir()
    (workdir / "output" / "notes.txt").write_text("the plan\n")


def test_an_agent_that_never_calls_a_tool_is_named_within_three_turns(fake_llm, workdir):
    fake = fake_llm(responder=lambda r: working_team(r) if r.agent != "talker" else
                    text(words(f"talker-{r.round}")))
    orch = orchestrator(team(fake.url, "architect", "talker"))
    orch.run(max_rounds=5)
    found = warnings(orch, "no_tools")
    assert [(w["agent"], w["round"]) for w in found] == [("talker", 3)]
    assert "talker called no tool in 3 turns in a row" in found[0]["message"]
    assert "recall" in found[0]["message"], "the warning names the tools that were offered"
    assert orch.ending.reason == "max_rounds", "a warning only: the team goes on"
    assert "talker called no tool" in (workdir / "logs" / "task.log").read_text()


def test_no_tool_turns_sets_when_a_tool_less_agent_is_named(fake_llm):
    fake = fake_llm(responder=lambda r: text(words(f"solo-{r.round}")))
    orch = orchestrator(team(fake.url, "solo"), no_tool_turns=2)
    orch.run(max_rounds=3)
    assert [(w["agent"], w["round"]) for w in warnings(orch, "no_tools")] == [("solo", 2)]


def test_an_agent_going_in_circles_is_warned_nudged_and_then_sits_out(fake_llm, notes):
    fake = fake_llm(responder=lambda r: circling(r) if r.agent == "reader" else working_team(r))
    orch = orchestrator(team(fake.url, "reader", "architect"), loop_limit=2)
    orch.run(max_rounds=9)
    warned = warnings(orch, "loop")
    # round 1 is the first read; rounds 2, 3, 4 repeat it: warned after the third repeat
    assert (warned[0]["agent"], warned[0]["round"]) == ("reader", 4)
    assert 'read_file {"path": "notes.txt"}' in warned[0]["message"] and "the same message" in warned[0]["message"]
    reader = [r for r in fake.chats_of("reader") if r.user]
    firsts = {r.round: r for r in reversed(reader)}  # the first request of each turn
    assert NUDGE not in firsts[4].user and NUDGE in firsts[5].user, "the nudge comes in the next prompt"
    assert "recall what is done and move on" in firsts[5].user
    # two more turns in circles (rounds 5, 6) past the nudge: it sits out rounds 7 to 9
    assert sorted(firsts) == [1, 2, 3, 4, 5, 6]
    assert "sits out 3 rounds" in warned[-1]["message"]
    skipped = [w["round"] for w in warnings(orch, "skip")]
    assert skipped == [7, 8, 9]
    assert orch.ending.reason == "max_rounds" and len({r.round for r in fake.chats_of("architect")}) == 9


def test_an_agent_going_in_circles_stops_the_run_through_the_cli_with_exit_code_4(fake_llm, azclaw, notes, workdir):
    fake = fake_llm(responder=circling)
    proc = azclaw("run", "--task", "Plan it", "--agents", "reader", "--endpoint", fake.url, "--max-rounds", "10",
                  "--loop-turns", "2", "--loop-limit", "1", "--on-loop", "stop")
    assert proc.returncode == 4, proc.stderr
    end = journal(run_file(workdir / "logs", "_journal.jsonl"))[-1]
    assert end["event"] == "run_end" and end["reason"] == "loop"
    assert end["figures"]["agent"] == "reader" and end["figures"]["turns"] == 3
    assert "reader went in circles for 3 turns in a row" in end["detail"]
    assert {r.round for r in fake.chats} == {1, 2, 3, 4}  # repeats in rounds 2, 3 (nudged), 4: stopped
    status = json.loads(azclaw("status", "--json").stdout)
    assert status["reason"] == "loop" and status["state"] == "ended"
    assert "To go on: azclaw run --task 'Plan it'" in proc.stderr and "--resume" in proc.stderr


def test_memories_titled_with_timestamps_are_a_circle(fake_llm):
    def stamps(request):
        if request.tool_results or not request.offers_tools:
            return text(words(f"stamps-{request.round}"))
        return call("remember", {"text": f"15:26:{request.round:02d}", "title": f"1526{request.round:02d}"})
    fake = fake_llm(responder=stamps)
    orch = orchestrator(team(fake.url, "dev"))
    orch.run(max_rounds=4)
    warned = warnings(orch, "loop")
    assert [(w["agent"], w["round"]) for w in warned] == [("dev", 3)]
    assert "memories titled 152603" in warned[0]["message"]


def test_remembering_the_same_text_every_turn_is_a_circle(fake_llm):
    def again(request):
        if request.tool_results or not request.offers_tools:
            return text(words(f"again-{request.round}"))
        return call("remember", {"text": "We use SQLite.", "title": "database"})
    fake = fake_llm(responder=again)
    orch = orchestrator(team(fake.url, "arch"))
    orch.run(max_rounds=4)
    progress = [e for e in journal(orch.journal_path) if e["event"] == "progress"]
    assert [(p["memories"], p["repeats"]) for p in progress] == [(["database"], 0)] + [([], 1)] * 3
    assert [(w["agent"], w["round"]) for w in warnings(orch, "loop")] == [("arch", 4)]


def test_a_team_without_progress_is_warned_and_stopped_only_when_asked(fake_llm, azclaw, workdir):
    def idle(request):
        return text(words(f"{request.agent}-{request.round}"))
    fake = fake_llm(responder=idle)
    base = ("run", "--task", "Plan it", "--agents", "a,b", "--endpoint", fake.url, "--loop-turns", "0",
            "--no-tool-turns", "0", "--no-progress-rounds", "2")
    warned = azclaw(*base, "--max-rounds", "4", "--name", "warned")
    assert warned.returncode == 0, warned.stderr
    lines = journal(workdir / "logs" / "warned_journal.jsonl")
    assert [(w["round"], w["what"]) for w in lines if w["event"] == "warning"] == [(2, "no_progress")]
    assert "no progress in 2 rounds in a row (rounds 1-2)" in warned.stderr
    stopped = azclaw(*base, "--max-rounds", "9", "--name", "stopped", "--stop-on-no-progress", "3")
    assert stopped.returncode == 4, stopped.stderr
    end = journal(workdir / "logs" / "stopped_journal.jsonl")[-1]
    assert (end["reason"], end["round"], end["figures"]) == ("no_progress", 3, {"rounds": 3, "since": 1})


@pytest.mark.parametrize("topic", sorted(p.stem for p in PACKAGE_TOPICS.glob("*.json")))
def test_a_twenty_round_run_of_a_shipped_topic_by_a_working_team_trips_nothing(fake_llm, topic, workdir):
    fake = fake_llm(responder=working_team)
    orch = orchestrator(team(fake.url, "architect", "developer", "reviewer", writers=("developer",)),
                        topic=Topic.load(PACKAGE_TOPICS / f"{topic}.json"))
    orch.run(max_rounds=20)
    assert orch.ending.reason == "max_rounds" and orch.last_round == 20
    tripped = [w for w in warnings(orch) if w["what"] in ("no_tools", "loop", "no_progress", "silent", "skip")]
    assert tripped == []
    assert not [r for r in fake.chats if "Note from the run" in r.user]
    progress = [e for e in journal(orch.journal_path) if e["event"] == "progress"]
    assert len(progress) == 20 and all(p["files"] and p["memories"] for p in progress)
