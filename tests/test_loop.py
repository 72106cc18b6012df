"""Points 3 and 5: the memory-first round loop keeps the context flat, tool
steps are bounded, and repeated calls run once."""

import json
from pathlib import Path

import pytest

from azclaw import Topic
from azclaw.memory import parse_entries
from fakellm import Reply, call, calls, text
from helpers import journal, memory_file, orchestrator, team, turn_requests

INITIAL = "INITIAL-PROMPT-51c"


def marker(agent: str, round_no: int) -> str:
    return f"MARKER-{agent}-R{round_no}-x"


def marking(request) -> Reply:
    """Every final reply names its agent and round, so leaks are visible."""
    return text(f"My note: {marker(request.agent, request.round)}")


def test_round_one_gets_the_initial_prompt(fake_llm):
    fake = fake_llm(responder=marking)
    topic = Topic.from_dict({"title": "Flat", "initial_prompt": INITIAL})
    orchestrator(team(fake.url, "alice", "bob"), topic=topic).run(max_rounds=1)
    assert [r.agent for r in fake.chats] == ["alice", "bob"]
    for request in fake.chats:
        assert request.round == 1
        assert request.user.split("\n\n")[0] == INITIAL
        assert [m["role"] for m in request.messages] == ["system", "user"]


def test_set_task_opens_round_one_without_a_topic(fake_llm):
    fake = fake_llm()
    orch = orchestrator(team(fake.url, "alice"))
    orch.set_task("TASK-TEXT-0d9: build a todo app")
    orch.run(max_rounds=1)
    assert "TASK-TEXT-0d9" in fake.chats[0].user


@pytest.mark.parametrize("names, rounds", [(["solo"], 3), (["alice", "bob"], 3), (["a", "b", "c"], 4)])
def test_each_round_sees_only_the_previous_rounds_messages_labelled_by_speaker(fake_llm, names, rounds):
    fake = fake_llm(responder=marking)
    topic = Topic.from_dict({"title": "Flat", "initial_prompt": INITIAL})
    orchestrator(team(fake.url, *names), topic=topic).run(max_rounds=rounds)

    assert len(fake.chats) == len(names) * rounds
    for request in fake.chats:
        r = request.round
        if r == 1:
            continue
        assert INITIAL not in request.raw, f"round {r} got the initial prompt"
        for speaker in names:
            assert f"[{speaker}]\nMy note: {marker(speaker, r - 1)}" in request.user
            for older in range(1, r - 1):
                assert marker(speaker, older) not in request.raw, f"round {r} got round {older}"
            assert marker(speaker, r) not in request.raw, "a turn saw a message of its own round"


def test_context_stays_flat_as_rounds_go_on(fake_llm):
    fake = fake_llm(responder=marking)
    # the scripted replies are the same but for their round on purpose: no loop nudge may change the requests
    orchestrator(team(fake.url, "alice", "bob"), topic=Topic.from_dict({"title": "Flat"}),
                 loop_turns=0).run(max_rounds=8)
    sizes = {r.size - len(r.system) for r in fake.chats if r.round >= 3}
    # the user message only changes by the round numbers in it
    assert max(sizes) - min(sizes) <= 4


def test_tool_steps_are_bounded_by_max_tool_steps(fake_llm):
    def always_a_new_call(request):
        if not request.offers_tools:
            return text("FINAL-AFTER-STEPS")
        return call("recall", {"query": f"q{len(request.messages)}"})

    fake = fake_llm(responder=always_a_new_call)
    orch = orchestrator(team(fake.url, "alice"), max_tool_steps=3)
    orch.run(max_rounds=2)

    round1 = turn_requests(fake, "alice", 1)
    assert len(round1) == 4, "3 tool steps and one final request"
    assert [r.offers_tools for r in round1] == [True, True, True, False]
    assert round1[-1].last["role"] == "user" and "tool" in round1[-1].last["content"].lower()
    assert "FINAL-AFTER-STEPS" in turn_requests(fake, "alice", 2)[0].user
    assert orch.stats.tool_calls == 6


def test_tool_results_go_back_to_the_model_in_the_same_turn(fake_llm):
    fake = fake_llm(per_agent={"alice": [call("list_files", {"directory": ""}), text("seen it")]})
    Path("output").mkdir()
    Path("output", "hello.txt").write_text("hi")
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    first, second = fake.chats_of("alice")
    assert second.messages[:2] == first.messages[:2]
    assert second.messages[2]["role"] == "assistant" and second.messages[2]["tool_calls"]
    assert second.messages[3]["role"] == "tool"
    assert second.messages[3]["tool_call_id"] == second.messages[2]["tool_calls"][0]["id"]
    assert "hello.txt" in second.tool_results[0]



def test_tool_call_ids_stay_unique_in_a_turn_when_the_server_repeats_them(fake_llm):
    # The fake numbers calls per reply (call_0, call_1 in every step), as servers without ids do.
    raw = json.dumps({"choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "recall", "arguments": '{"query": "b"}'}},
        {"id": "call_0", "type": "function", "function": {"name": "recall", "arguments": '{"query": "c"}'}}]}}]})
    fake = fake_llm(per_agent={"alice": [call("recall", {"query": "a"}), Reply(body=raw), text("done")]})
    orchestrator(team(fake.url, "alice")).run(max_rounds=1)
    messages = fake.chats_of("alice")[2].messages
    call_ids = [c["id"] for m in messages if m["role"] == "assistant" for c in m["tool_calls"]]
    result_ids = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert len(set(call_ids)) == 3 and result_ids == call_ids


# -- dedup ------------------------------------------------------------

@pytest.mark.parametrize("again", [
    {"text": "DUP-TEXT-1", "title": "dup_title"},
    {"title": "dup_title", "text": "DUP-TEXT-1"},  # same arguments, other order
], ids=["same-order", "other-order"])
def test_identical_call_twice_in_one_step_runs_once(fake_llm, again):
    args = {"text": "DUP-TEXT-1", "title": "dup_title"}
    fake = fake_llm(per_agent={"alice": [calls(("remember", args), ("remember", again)), text("ok")]})
    orch = orchestrator(team(fake.url, "alice"))
    orch.run(max_rounds=1)

    stored = memory_file("agents/alice", "alice", "dup_title")
    assert stored.read_text(encoding="utf-8").count("DUP-TEXT-1") == 1
    assert orch.stats.memories_stored == 1
    first, second = fake.chats_of("alice")[1].tool_results
    assert not first.startswith("ERROR") and "repeat" not in first.lower()
    assert second.startswith("[repeat skipped: this exact call was already made in this turn")


def test_identical_call_in_a_later_step_of_the_same_turn_runs_once(fake_llm):
    args = {"text": "DUP-TEXT-2", "title": "dup_two"}
    fake = fake_llm(per_agent={"alice": [
        calls(("remember", args), ("recall", {"query": "x"})),
        calls(("remember", args), ("list_files", {})),
        text("done")]})
    orch = orchestrator(team(fake.url, "alice"))
    orch.run(max_rounds=1)
    assert memory_file("agents/alice", "alice", "dup_two").read_text().count("DUP-TEXT-2") == 1
    assert orch.stats.tool_calls == 3
    assert fake.chats_of("alice")[2].offers_tools, "a step with one new call keeps the tools"


def test_a_step_of_only_repeats_ends_tool_use_and_asks_for_an_answer(fake_llm):
    args = {"query": "schema"}
    fake = fake_llm(per_agent={"alice": [call("recall", args), call("recall", dict(args)),
                                         text("ANSWER-WITHOUT-TOOLS"), text("round two")]})
    orch = orchestrator(team(fake.url, "alice", "bob"))
    orch.run(max_rounds=2)

    requests = turn_requests(fake, "alice", 1)
    assert len(requests) == 3
    assert requests[0].offers_tools and requests[1].offers_tools
    assert not requests[2].offers_tools, "no tools offered after a step of only repeats"
    last = requests[2].last
    assert last["role"] == "user" and "without tools" in last["content"]
    assert orch.stats.tool_calls == 1
    assert "ANSWER-WITHOUT-TOOLS" in turn_requests(fake, "bob", 2)[0].user


def test_same_call_in_different_turns_runs_each_time(fake_llm):
    args = {"text": "PER-TURN", "title": "per_turn"}
    other = {"text": "ANOTHER", "title": "per_turn"}
    fake = fake_llm(per_agent={"alice": [call("remember", args), text("r1"), call("remember", args), text("r2"),
                                         call("remember", other), text("r3")]})
    orch = orchestrator(team(fake.url, "alice"))
    orch.run(max_rounds=3)
    # it ran again (not skipped as a repeat of another turn's call), and said the text was already there
    assert [r.tool_results for r in turn_requests(fake, "alice", 2)][1][0].startswith("Already remembered as 'per_turn'")
    assert orch.stats.memories_stored == 2, "a repeat of text already stored is no memory stored"
    assert orch.stats.tool_calls == 3
    # the same text under the same title is stored once (a round redone after a kill stores nothing twice)
    stored = parse_entries(memory_file("agents/alice", "alice", "per_turn").read_text())
    assert [(e.text, e.round) for e in stored] == [("PER-TURN", 1), ("ANOTHER", 3)]


def test_journal_records_every_turn(fake_llm):
    fake = fake_llm(responder=marking)
    orch = orchestrator(team(fake.url, "alice", "bob"), topic=Topic.from_dict({"title": "J"}, name="jt"))
    orch.run(max_rounds=2)
    events = [json.loads(line) for line in orch.journal_path.read_text().splitlines()]
    turns = [(e["round"], e["agent"], e["text"]) for e in events if e["event"] == "turn"]
    assert turns == [(r, a, f"My note: {marker(a, r)}") for r in (1, 2) for a in ("alice", "bob")]


def test_parallel_round_keeps_speaker_order_and_the_flat_context(fake_llm):
    fake = fake_llm(responder=marking)
    names = ["a1", "a2", "a3"]
    orchestrator(team(fake.url, *names), topic=Topic.from_dict({"title": "P"}), parallel=True).run(max_rounds=3)
    assert sorted((r.round, r.agent) for r in fake.chats) == [(r, n) for r in (1, 2, 3) for n in names]
    for request in (r for r in fake.chats if r.round == 3):
        positions = [request.user.index(f"[{n}]\nMy note: {marker(n, 2)}") for n in names]
        assert positions == sorted(positions)
        assert not any(marker(n, 1) in request.raw for n in names)


def test_request_size_counts_the_arguments_the_turn_already_sent(fake_llm, workdir):
    content = "x = 1\n" * 4000  # 24,000 characters that every later request of the turn carries
    fake = fake_llm(per_agent={"dev": [call("write_file", {"path": "big.py", "content": content}),
                                       call("list_files", {}), text("done")]})
    orch = orchestrator(team(fake.url, "dev", writers=("dev",)))
    orch.set_task("x")
    orch.run(max_rounds=1)
    turn = next(e for e in journal(orch.journal_path) if e["event"] == "turn")
    sent = max(len(json.dumps(r.messages)) for r in fake.chats_of("dev"))
    assert len(content) < turn["context_chars"] <= sent
