"""Checkpoints every 5 rounds and at the end; resume continues with
the next round, stats carried on, ``max_rounds`` naming the last round."""

import json

import pytest

from azclaw import Topic
from azclaw.errors import CheckpointError
from fakellm import call, text
from helpers import orchestrator, read_json, team

TOKENS = (100, 7)  # what the fake server reports for every request


def test_checkpoint_is_on_disk_after_rounds_5_and_10_and_at_the_end(fake_llm, workdir):
    path = workdir / "logs" / "ckpt_checkpoint.json"
    seen_on_disk = {}

    def watch(request):
        # What is on disk when a round starts is what the previous rounds left.
        if request.round not in seen_on_disk:
            seen_on_disk[request.round] = read_json(path)["round"] if path.exists() else None
        return text(f"note {request.round}")

    fake = fake_llm(responder=watch)
    orch = orchestrator(team(fake.url, "alice"), topic=Topic.from_dict({"title": "C"}, name="ckpt"))
    orch.run(max_rounds=12)

    assert seen_on_disk == {1: None, 2: None, 3: None, 4: None, 5: None, 6: 5, 7: 5, 8: 5, 9: 5, 10: 5,
                            11: 10, 12: 10}
    final = read_json(path)
    assert final["round"] == 12 and final["max_rounds"] == 12
    events = [json.loads(line) for line in orch.journal_path.read_text().splitlines()]
    assert [e["round"] for e in events if e["event"] == "checkpoint"] == [5, 10, 12]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")], "no temporary files left"


def test_checkpoint_holds_round_stats_memory_counts_and_last_100_messages(fake_llm, workdir):
    def reply(request):
        if request.agent == "alice" and request.round == 1 and not request.tool_results:
            return call("remember", {"text": "kept", "title": "m1"})
        return text(f"msg {request.agent} {request.round}")

    fake = fake_llm(responder=reply, tokens=TOKENS)
    orch = orchestrator(team(fake.url, "alice", "bob", "carol"), topic=Topic.from_dict({"title": "H"}, name="hist"))
    orch.run(max_rounds=40)

    data = read_json(workdir / "logs" / "hist_checkpoint.json")
    assert data["round"] == 40
    assert data["memory_counts"] == {"alice": 1, "bob": 0, "carol": 0}
    assert data["stats"]["rounds"] == 40
    assert data["stats"]["memories"] == 1
    requests = len(fake.chats)
    assert data["stats"]["prompt_tokens"] == TOKENS[0] * requests
    assert data["stats"]["completion_tokens"] == TOKENS[1] * requests
    assert set(data["stats"]["agents"]) == {"alice", "bob", "carol"}
    history = data["history"]
    assert len(history) == 100
    assert history[-1] == {"round": 40, "agent": "carol", "text": "msg carol 40"}
    assert history[0] == {"round": 7, "agent": "carol", "text": "msg carol 7"}


def run_uninterrupted(fake_llm, rounds):
    fake = fake_llm(tokens=TOKENS)
    orch = orchestrator(team(fake.url, "alice", "bob"), topic=Topic.from_dict({"title": "R"}, name="res"),
                        log_dir="logs-whole")
    return orch.run(max_rounds=rounds)


def test_resume_continues_after_last_checkpoint(fake_llm, workdir):
    topic = Topic.from_dict({"title": "R", "initial_prompt": "INITIAL-RES"}, name="res")
    first = fake_llm(responder=lambda r: text(f"said {r.agent} r{r.round}"), tokens=TOKENS)
    orchestrator(team(first.url, "alice", "bob"), topic=topic).run(max_rounds=3)
    path = workdir / "logs" / "res_checkpoint.json"
    assert read_json(path)["round"] == 3

    second = fake_llm(responder=lambda r: text(f"said {r.agent} r{r.round}"), tokens=TOKENS)
    orch = orchestrator(team(second.url, "alice", "bob"), topic=topic)
    stats = orch.run(max_rounds=6, resume=str(path))

    assert [r.round for r in second.chats] == [4, 4, 5, 5, 6, 6], "max_rounds is the last round number"
    round4 = second.chats[0]
    assert "[alice]\nsaid alice r3" in round4.user and "[bob]\nsaid bob r3" in round4.user
    assert "INITIAL-RES" not in round4.raw
    assert stats.rounds == 6
    assert stats.prompt_tokens == TOKENS[0] * (len(first.chats) + len(second.chats))
    assert stats.completion_tokens == TOKENS[1] * 12
    assert stats.agents["alice"].turns == 6
    assert read_json(path)["round"] == 6


def test_resumed_run_ends_where_an_uninterrupted_one_would(fake_llm, workdir):
    whole = run_uninterrupted(fake_llm, 7)
    fake = fake_llm(tokens=TOKENS)
    topic = Topic.from_dict({"title": "R"}, name="res")
    orchestrator(team(fake.url, "alice", "bob"), topic=topic).run(max_rounds=7 - 4)
    resumed = orchestrator(team(fake.url, "alice", "bob"), topic=topic).run(max_rounds=7, resume=True)
    for key in ("rounds", "prompt_tokens", "completion_tokens", "tool_calls", "memories"):
        assert getattr(resumed, key) == getattr(whole, key), key
    assert resumed.agents["bob"].turns == whole.agents["bob"].turns == 7


def test_resume_from_a_missing_checkpoint_names_the_path(fake_llm, workdir):
    fake = fake_llm()
    orch = orchestrator(team(fake.url, "alice"))
    with pytest.raises(CheckpointError) as info:
        orch.run(max_rounds=2, resume="logs/never_written.json")
    assert "logs/never_written.json" in str(info.value)
    assert fake.chats == []


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"format": "something-else"}),
                                     json.dumps([1, 2])])
def test_resume_from_a_damaged_checkpoint_is_refused(fake_llm, workdir, content):
    (workdir / "bad.json").write_text(content)
    fake = fake_llm()
    with pytest.raises(CheckpointError) as info:
        orchestrator(team(fake.url, "alice")).run(max_rounds=2, resume="bad.json")
    assert "bad.json" in str(info.value)
    assert fake.chats == []


def test_resume_with_a_checkpoint_of_another_topic_is_refused(fake_llm, workdir):
    fake = fake_llm()
    orchestrator(team(fake.url, "alice"), topic=Topic.from_dict({"title": "One"}, name="one")).run(max_rounds=1)
    with pytest.raises(CheckpointError):
        orchestrator(team(fake.url, "alice"), topic=Topic.from_dict({"title": "Two"}, name="two")).run(
            max_rounds=2, resume="logs/one_checkpoint.json")


def test_resume_without_max_rounds_ends_where_the_interrupted_run_would_have(fake_llm, workdir):
    def stop_in_round_2(request):
        if request.round == 2:
            (workdir / "STOP").touch()
        return text("ok")

    topic = Topic.from_dict({"title": "R"}, name="res")
    first = fake_llm(responder=stop_in_round_2)
    orchestrator(team(first.url, "alice"), topic=topic).run(max_rounds=4)
    checkpoint = read_json(workdir / "logs" / "res_checkpoint.json")
    assert (checkpoint["round"], checkpoint["max_rounds"]) == (2, 4)

    second = fake_llm()
    stats = orchestrator(team(second.url, "alice"), topic=topic).run(resume=True)
    assert [r.round for r in second.chats] == [3, 4], "the checkpoint's max_rounds is the last round"
    assert stats.rounds == 4


@pytest.mark.parametrize("field, value", [("tool_calls", "7"), ("agents", {"alice": {"turns": None}}),
                                          ("errors", [1])])
def test_resume_from_a_checkpoint_with_mistyped_stats_is_refused_before_any_round(fake_llm, workdir, field, value):
    fake = fake_llm()
    orch = orchestrator(team(fake.url, "alice"))
    orch.set_task("x")
    orch.run(max_rounds=1)
    data = read_json(orch.checkpoint_path)
    data["stats"][field] = value
    orch.checkpoint_path.write_text(json.dumps(data))
    requests = len(fake.chats)
    with pytest.raises(CheckpointError) as info:
        orchestrator(team(fake.url, "alice")).run(max_rounds=3, resume=orch.checkpoint_path)
    assert str(orch.checkpoint_path) in str(info.value) and "damaged" in str(info.value)
    assert len(fake.chats) == requests
