"""One agent's turn (turn.py), through the real HTTP path: the step loop
skips repeats and near-repeats and ends tool use on a step of nothing but
repeats; the journal keeps a skipped repeat as a repeat, failed when the
call it repeats failed; a reply's tool calls are capped."""

from __future__ import annotations

import json
import re

import pytest

from fakellm import Reply, call, text
from azclaw.turn import MAX_CALLS_PER_STEP
from helpers import journal, orchestrator, run_file, team

JOURNAL = "logs/task_journal.jsonl"


def offered(request) -> list[str]:
    """The tools a request offers, in any mode."""
    if request.body.get("tools"):
        return request.tool_names
    schema = (request.body.get("response_format") or {}).get("json_schema", {}).get("schema", {})
    return [alt["properties"]["tool"]["enum"][0] for alt in schema.get("anyOf", [schema]) if schema] 


def answer(request, tool: str, arguments: dict) -> Reply:
    """A call in the request's mode."""
    if "response_format" in request.body:
        return text(json.dumps({"tool": tool, "arguments": arguments}))
    return call(tool, arguments)


def final(request, message: str) -> Reply:
    if "response_format" in request.body:
        return text(json.dumps({"tool": "reply", "arguments": {"message": message}}))
    return text(message)


def chaining(request) -> Reply:
    """A small model that stores the title it was given back, again and again."""
    if "remember" not in offered(request):
        return final(request, "Stored the plan.")
    told = re.findall(r"Remembered as '([^']+)'", json.dumps(request.messages))
    return answer(request, "remember", {"text": told[-1] if told else "152526"})


def turn_lines(workdir) -> list[dict]:
    return [e for e in journal(workdir / JOURNAL) if e["event"] == "turn"]


@pytest.mark.parametrize("mode", ["native", "constrained"])
def test_a_model_that_chains_remember_on_its_own_results_stops_after_the_second_call(fake_llm, workdir, mode):
    fake = fake_llm(responder=chaining)
    orchestrator(team(fake.url, "architect", tool_mode=mode)).run(max_rounds=1)
    first, second, third = fake.chats  # the second call is skipped, and the next step offers no tools
    assert "remember" in offered(first) and "remember" in offered(second)
    assert "remember" not in offered(third)
    assert "Every tool call you just made repeats one" in json.dumps(third.messages)
    [turn] = turn_lines(workdir)
    stored, repeat = turn["calls"]
    assert stored["ok"] and not stored.get("duplicate")
    assert (repeat["tool"], repeat["duplicate"], repeat["repeat"], repeat["ok"]) == ("remember", True, "echo", True)
    assert repeat["result"].startswith("[repeat skipped: its arguments are the result of your previous call")
    assert (turn["tools"], turn["repeats"], turn["tool_errors"]) == ({"remember": 1}, 1, 0)
    assert turn["text"] == "Stored the plan."
    assert len(list((workdir / "agents" / "architect").rglob("remember/*.txt"))) == 1


def test_a_skipped_repeat_of_a_failed_call_is_journaled_as_a_failed_repeat(fake_llm, workdir, azclaw):
    fake = fake_llm(script=[call("recall", {"query": "db", "agent": "you"}),
                            call("recall", {"query": "db", "agent": "you"}), text("No luck.")])
    orchestrator(team(fake.url, "architect", "developer")).run(max_rounds=1)
    turn = turn_lines(workdir)[0]
    failed, repeat = turn["calls"]
    assert not failed["ok"] and failed["result"].startswith("ERROR: unknown agent 'you'")
    assert (repeat["duplicate"], repeat["repeat"], repeat["ok"]) == (True, "same", False)
    assert repeat["result"].startswith("[repeat of a call that failed, skipped")
    assert (turn["tool_errors"], turn["repeats"], turn["tools"]) == (1, 1, {"recall": 1})
    assert fake.chats[1].tool_results[-1] == failed["result"]  # the model had the error
    shown = azclaw("show", "--tools", "--log-dir", "logs")
    assert shown.returncode == 0, shown.stderr
    assert "recall (repeat of a failed call, not run again" in shown.stdout


def test_near_repeats_in_one_step_are_skipped_and_end_tool_use(fake_llm, workdir):
    fake = fake_llm(script=[call("recall", {"query": "Database choice"}),
                            Reply(tool_calls=[("recall", {"query": "database choice?"}),
                                              ("recall", {"query": "DATABASE CHOICE"})]),
                            text("Nothing stored yet.")])
    orchestrator(team(fake.url, "architect")).run(max_rounds=1)
    turn = turn_lines(workdir)[0]
    assert [(c["repeat"] if c.get("duplicate") else "ran") for c in turn["calls"]] == ["ran", "near", "near"]
    assert not fake.chats[2].offers_tools
    assert turn["text"] == "Nothing stored yet."


def test_a_repeat_beside_new_work_does_not_end_tool_use(fake_llm, workdir):
    fake = fake_llm(script=[call("recall", {"query": "database"}),
                            Reply(tool_calls=[("recall", {"query": "database"}), ("recall", {"query": "routes"})]),
                            text("done")])
    orchestrator(team(fake.url, "architect")).run(max_rounds=1)
    assert fake.chats[2].offers_tools
    assert [c.get("repeat", "") for c in turn_lines(workdir)[0]["calls"]] == ["", "same", ""]


def test_a_reply_with_a_thousand_tool_calls_runs_only_the_cap_and_the_rest_are_told_why(fake_llm, azclaw,
                                                                                        workdir):
    flood = [("remember", {"text": f"note {n}", "title": f"note-{n}"}) for n in range(1000)]
    fake = fake_llm(per_agent={"solo": [Reply(tool_calls=flood), text("Done.")]})
    proc = azclaw("run", "--task", "Flood", "--endpoint", fake.url, "--agents", "solo", "--max-rounds", "1",
                  "--retries", "0")
    assert proc.returncode == 0, proc.stderr
    stored = list((workdir / "agents" / "solo").rglob("note-*.txt"))
    assert len(stored) == MAX_CALLS_PER_STEP == 16
    results = fake.chats_of("solo")[1].tool_results
    assert len(results) == 1000, "every call gets a result, as the API wants"
    assert all(r.startswith("Stored") or "note" in r for r in results[:MAX_CALLS_PER_STEP]), results[:3]
    refused = results[MAX_CALLS_PER_STEP:]
    assert all(r.startswith("ERROR: not run: one reply may make at most 16 tool calls") for r in refused)
    [turn] = [e for e in journal(run_file(workdir / "logs", "_journal.jsonl")) if e["event"] == "turn"]
    ran, over = turn["calls"][:-1], turn["calls"][-1]
    assert len(ran) == turn["tool_calls"] == MAX_CALLS_PER_STEP and turn["text"] == "Done."
    assert (over["tool"], over["ok"], over["arguments"]) == ("", False, "984 more calls")  # one entry for the rest
    assert turn["tool_errors"] == 1
    assert any("a reply made 1000 tool calls: the first 16 were taken, the other 984 refused" in p
               for p in turn["problems"])
    assert "the other 984 refused" in proc.stderr  # said on the console too
