"""Budgets (issue 21): tokens for the run and per agent, time, a clock time
and money end a run between turns, at most one turn over, with reason
``budget``, a checkpoint, exit code 3 and one line saying how to go on; a
resumed run counts what was already spent."""

from __future__ import annotations

import json
import shlex
from datetime import datetime

import pytest

from azclaw.budgets import Budgets
from azclaw.events import RunStarted, TurnFinished
from azclaw.options import RunOptions
from azclaw.stats import RunStats
from azclaw.turn import Turn
from fakellm import text
from helpers import assert_one_error_line, journal, orchestrator, read_json, run_file, team, words

PER_TURN = 120  # the scripted server counts 100 prompt + 20 completion tokens for every reply


def talking(request):
    return text(words(f"{request.agent}-{request.round}"))


def go_on_line(stderr: str) -> list[str]:
    line = next(ln for ln in stderr.splitlines() if ln.startswith("To go on: "))
    return shlex.split(line[len("To go on: "):])


def test_a_token_budget_stops_within_one_turn_and_resume_with_more_goes_on(fake_llm, azclaw, workdir):
    fake = fake_llm(responder=talking, tokens=(100, 20))
    args = ("run", "--task", "Plan it", "--agents", "a,b", "--endpoint", fake.url, "--max-rounds", "10",
            "--no-tool-turns", "0")
    first = azclaw(*args, "--budget-tokens", "500")
    assert first.returncode == 3, first.stderr
    lines = journal(run_file(workdir / "logs", "_journal.jsonl"))
    end = lines[-1]
    assert end["event"] == "run_end" and end["reason"] == "budget"
    assert end["figures"] == {"budget": "tokens", "limit": 500, "used": 600, "option": "budget_tokens"}
    assert 0 <= end["figures"]["used"] - 500 < PER_TURN, "at most one turn over"
    assert len(fake.chats) == 5  # the fifth turn reached the budget; none began after it
    assert end["round"] == 2 and read_json(run_file(workdir / "logs", "_checkpoint.json"))["round"] == 2
    assert end["detail"] == "tokens: 600 of 500" and "Ended after round 2: budget (tokens: 600 of 500)" in first.stderr
    status = json.loads(azclaw("status", "--json").stdout)
    assert (status["state"], status["reason"], status["reason_figures"]["used"]) == ("ended", "budget", 600)
    command = go_on_line(first.stderr)
    assert command[:2] == ["azclaw", "run"] and command[-3:] == ["--resume", "--budget-tokens", "1000"]
    resumed = azclaw(*command[1:])  # the line, as printed: a budget twice as large
    assert resumed.returncode == 3, resumed.stderr
    assert len(fake.chats) == 9  # 600 spent before count: four more turns reach 1,080
    assert [r.round for r in fake.chats[5:]] == [3, 4, 4, 5]  # round 3 took up b's turn the first run made
    assert journal(run_file(workdir / "logs", "_journal.jsonl"))[-1]["figures"]["used"] == 1080


def test_a_resumed_run_counts_what_was_already_spent(fake_llm, workdir):
    fake = fake_llm(responder=talking, tokens=(100, 20))
    first = orchestrator(team(fake.url, "a"), budget_tokens=250)
    first.run(max_rounds=10)
    assert len(fake.chats) == 3
    row = next(line.split() for line in first.summary().splitlines() if line.startswith("a "))
    assert row[1:3] == ["3", "360"], "the summary counts the turn of the round the budget stopped"
    again = orchestrator(team(fake.url, "a"), budget_tokens=250)
    again.run(resume=True)
    assert len(fake.chats) == 3, "the budget was used up before: not one more request"
    assert again.ending.reason == "budget" and again.ending.figures["used"] == 360


def test_an_agents_own_budget_from_the_team_file_ends_the_run_naming_it(fake_llm, azclaw, workdir):
    fake = fake_llm(responder=talking, tokens=(100, 20))
    team_file = workdir / "team.json"
    team_file.write_text(json.dumps({"agents": [{"name": "cheap", "budget_tokens": 200}, {"name": "rich"}]}))
    proc = azclaw("run", "--task", "Plan it", "--team", str(team_file), "--endpoint", fake.url, "--max-rounds", "6",
                  "--no-tool-turns", "0")
    assert proc.returncode == 3, proc.stderr
    end = journal(run_file(workdir / "logs", "_journal.jsonl"))[-1]
    assert end["figures"] == {"budget": "agent_tokens", "agent": "cheap", "limit": 200, "used": 240,
                              "option": "budget_tokens"}
    assert end["detail"] == "cheap's tokens: 240 of 200"
    assert "To go on: raise budget_tokens of cheap in the team file (now 200), then: azclaw run" in proc.stderr


def test_a_money_budget_counts_the_tokens_at_the_given_prices(fake_llm, azclaw, workdir):
    fake = fake_llm(responder=talking, tokens=(100, 20))
    proc = azclaw("run", "--task", "Plan it", "--agents", "a", "--endpoint", fake.url, "--max-rounds", "9",
                  "--price", "1000,5000", "--budget-money", "0.5", "--no-tool-turns", "0")
    assert proc.returncode == 3, proc.stderr  # a turn costs $0.10 + $0.10
    end = journal(run_file(workdir / "logs", "_journal.jsonl"))[-1]
    assert (end["figures"]["budget"], end["figures"]["used"], end["round"]) == ("money", 0.6, 2)
    assert "Cost: $0.60 at $1000 and $5000 per million prompt and completion tokens" in proc.stderr
    assert go_on_line(proc.stderr)[-3:] == ["--resume", "--budget-money", "1.0"]


def test_max_time_ends_the_run_between_turns(fake_llm, workdir):
    fake = fake_llm(responder=talking, delay=0.3)
    orch = orchestrator(team(fake.url, "a"), max_time="1s", no_tool_turns=0)
    orch.run(max_rounds=1000)
    assert orch.ending.reason == "budget" and orch.ending.figures["budget"] == "time"
    assert orch.ending.figures["used"] >= 1.0 and orch.last_round < 1000
    assert orch.ending.detail.startswith("time: ") and orch.ending.detail.endswith(" of 1s")


@pytest.mark.parametrize("option, value, named", [
    ("--max-time", "8x", "max_time"), ("--max-time", "-1h", "max_time"), ("--until", "25:00", "until"),
    ("--price", "3,x", "price"), ("--budget-money", "5", "budget_money"), ("--on-loop", "panic", "on_loop")])
def test_a_bad_limit_is_one_error_line_naming_it(azclaw, option, value, named):
    proc = azclaw("run", "--task", "T", "--endpoint", "http://127.0.0.1:9/v1/chat/completions", f"{option}={value}")
    assert_one_error_line(proc, named)


@pytest.mark.parametrize("given, seconds", [("90s", 90), ("30m", 1800), ("8h", 28800), ("1h30m", 5400),
                                            ("2d", 172800), ("45", 45), (120, 120)])
def test_durations_read_as_people_write_them(given, seconds):
    assert RunOptions(max_time=given).max_time == seconds


def turn(agent: str, prompt: int, completion: int) -> TurnFinished:
    return TurnFinished(Turn(agent, 1, prompt_tokens=prompt, completion_tokens=completion))


def test_until_is_the_next_time_the_clock_shows_it():
    now = [datetime(2025, 1, 1, 23, 0)]
    budgets = Budgets(RunOptions(until="07:00"), now=lambda: now[0])
    assert budgets(RunStarted(stats=RunStats())) is None
    assert budgets.deadline == datetime(2025, 1, 2, 7, 0), "past 07:00 today: tomorrow"
    now[0] = datetime(2025, 1, 2, 6, 59)
    assert budgets(turn("a", 1, 1)) is None
    now[0] = datetime(2025, 1, 2, 7, 0, 5)
    stop = budgets(turn("a", 1, 1))
    assert stop.reason == "budget" and stop.figures["budget"] == "until" and stop.detail == "until 07:00: it is 07:00:05"


def test_a_budget_already_used_up_stops_the_run_at_its_start():
    stats = RunStats()
    stats.agent("a").prompt_tokens = 900
    stop = Budgets(RunOptions(budget_tokens=1000))(RunStarted(stats=stats))
    assert stop is None
    stats.agent("a").completion_tokens = 100
    stop = Budgets(RunOptions(budget_tokens=1000))(RunStarted(stats=stats))
    assert stop.reason == "budget" and stop.figures["used"] == 1000
