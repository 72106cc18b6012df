"""Context modes: memory (the previous round), full (the whole conversation,
cut at the budget, oldest first) and window:N (the last N rounds), asserted
on what the scripted server received."""

import re

import pytest

from azclaw.errors import CheckpointError
from azclaw import ConfigError, Topic
from azclaw.context import ContextMode
from azclaw.prompt import FIRST_ROUND
from fakellm import text
from helpers import assert_one_error_line, journal, orchestrator, read_json, team

OPENING = "OPENING-PROMPT-7a1"
NAMES = ("alice", "bob", "carol")
_MARK = re.compile(r"MARK-(\w+)-R(\d+)-end")


def mark(agent: str, round_no: int) -> str:
    return f"MARK-{agent}-R{round_no}-end"


def marking(request):
    """Every reply names its agent and round, padded so requests grow visibly."""
    return text(f"Note {mark(request.agent, request.round)} " + "pad " * 40)


def carried(request) -> set[int]:
    """The rounds whose messages a request carries (0: the opening prompt)."""
    rounds = {int(r) for _, r in _MARK.findall(request.user)}
    return rounds | ({0} if OPENING in request.user else set())


def run(fake, context, rounds, folder=".", **kwargs):
    topic = Topic.from_dict({"title": "Modes", "initial_prompt": OPENING}, name="modes")
    # native: these replies never call a tool, and auto would move the agents to text and constrained
    # calls after two rounds (what a request carries is the same either way, but the prompts grow)
    orch = orchestrator(team(fake.url, *NAMES, tool_mode="native"), topic=topic, context=context, log_dir=f"{folder}/logs",
                        output_dir=f"{folder}/output", agents_dir=f"{folder}/agents", **kwargs)
    orch.run(max_rounds=rounds)
    return orch


def first_requests(fake) -> dict[tuple, object]:
    """The first request of each (agent, round) turn."""
    firsts = {}
    for r in fake.chats:
        firsts.setdefault((r.agent, r.round), r)
    return firsts


def test_round_one_is_the_same_in_every_mode(fake_llm):
    sent = {}
    for mode in ("memory", "full", "window:2"):
        fake = fake_llm(responder=marking)
        run(fake, mode, 1, folder=mode.replace(":", "-"))
        sent[mode] = [(r.system, r.user) for r in fake.chats]
    assert [u for _, u in sent["memory"]] == [u for _, u in sent["full"]] == [u for _, u in sent["window:2"]]
    assert sent["memory"][0][1] == OPENING + "\n\n" + FIRST_ROUND  # a topic without phases: what round 1 asks
    # the system prompts differ only in the line that says truthfully what each mode sends
    for mode, told in (("memory", "Nothing older is shown again"), ("full", "whole conversation so far"),
                       ("window:2", "in the last 2 rounds")):
        assert told in sent[mode][0][0]
    assert "Nothing older is shown again" not in sent["full"][0][0]
    strip = lambda text: "\n".join(line for line in text.splitlines() if not line.startswith("- You are shown"))
    assert strip(sent["memory"][0][0]) == strip(sent["full"][0][0]) == strip(sent["window:2"][0][0])


def test_round_one_carries_the_phase_focus_in_every_mode_and_later_rounds_show_the_opening_alone(fake_llm):
    topic = {"title": "Modes", "initial_prompt": OPENING, "phases": [
        {"name": "Design", "rounds": [1, 3], "focus": "FOCUS-5c2: decide the schema."}]}
    firsts, seconds = {}, {}
    for mode in ("memory", "full", "window:2"):
        fake = fake_llm(responder=marking)
        folder = mode.replace(":", "-")
        orchestrator(team(fake.url, *NAMES), topic=Topic.from_dict(topic, name="modes"), context=mode,
                     log_dir=f"{folder}/logs", output_dir=f"{folder}/output", agents_dir=f"{folder}/agents",
                     ).run(max_rounds=2)
        firsts[mode] = [r.user for r in fake.chats if r.round == 1]
        seconds[mode] = [r.user for r in fake.chats if r.round == 2]
    assert firsts["memory"] == firsts["full"] == firsts["window:2"]
    assert firsts["memory"][0] == OPENING + "\n\nRound 1, phase Design: FOCUS-5c2: decide the schema."
    assert all(OPENING in u and "FOCUS-5c2" not in u for u in seconds["full"])


def test_full_requests_grow_with_the_rounds_and_memory_requests_stay_flat(fake_llm):
    rounds = 8
    fake_memory, fake_full = fake_llm(responder=marking), fake_llm(responder=marking)
    # the scripted replies are the same but for their round on purpose: no loop nudge may change the requests
    run(fake_memory, "memory", rounds, folder="m", loop_turns=0)
    run(fake_full, "full", rounds, folder="f", loop_turns=0)
    memory, full = first_requests(fake_memory), first_requests(fake_full)
    for n in range(2, rounds + 1):
        for agent in NAMES:
            assert carried(memory[(agent, n)]) == {n - 1}
            assert carried(full[(agent, n)]) == set(range(0, n)), f"round {n} of {agent}"
            for earlier in range(1, n):
                for speaker in NAMES:
                    assert mark(speaker, earlier) in full[(agent, n)].user
    sizes_memory = [memory[("alice", n)].size for n in range(2, rounds + 1)]
    sizes_full = [full[("alice", n)].size for n in range(1, rounds + 1)]
    assert max(sizes_memory) <= min(sizes_memory) * 1.05, sizes_memory
    assert all(b > a for a, b in zip(sizes_full, sizes_full[1:])), sizes_full
    assert len(full[("alice", rounds)].user) > (rounds - 2) * len(memory[("alice", rounds)].user)


@pytest.mark.parametrize("window", [1, 2, 3])
def test_a_window_carries_exactly_its_last_n_rounds(fake_llm, window):
    fake = fake_llm(responder=marking)
    run(fake, f"window:{window}", 6)
    for (agent, n), request in first_requests(fake).items():
        expected = set(range(max(0, n - window), n)) if n > 1 else {0}
        assert carried(request) == expected, (agent, n, window)


def test_window_one_sends_what_memory_sends(fake_llm):
    fakes = {mode: fake_llm(responder=marking) for mode in ("memory", "window:1")}
    for mode, fake in fakes.items():
        run(fake, mode, 4, folder=mode.replace(":", "-"))
    assert [r.user for r in fakes["memory"].chats] == [r.user for r in fakes["window:1"].chats]


def test_full_mode_keeps_every_message_past_the_checkpoints_hundred(fake_llm):
    fake = fake_llm(responder=lambda r: text(f"{mark(r.agent, r.round)}"))
    run(fake, "full", 36, context_budget=100_000)  # 108 messages, more than a checkpoint's 100
    last = first_requests(fake)[("alice", 36)]
    assert carried(last) == set(range(0, 36))
    checkpoint = read_json("logs/modes_checkpoint.json")
    assert checkpoint["context"] == "full"
    assert len(checkpoint["history"]) == 3 * 36


def test_full_mode_drops_the_oldest_messages_at_the_budget_with_a_note(fake_llm):
    fake = fake_llm(responder=marking)
    budget = 1500  # tokens, at 3 characters each: room for a few rounds only
    run(fake, "full", 10, context_budget=budget)
    turns = [e for e in journal("logs/modes_journal.jsonl") if e["event"] == "turn"]
    firsts = first_requests(fake)
    dropped = {(t["agent"], t["round"]): t["dropped"] for t in turns}
    assert dropped[("alice", 2)] == 0
    assert dropped[("carol", 10)] > 0
    for (agent, n), request in firsts.items():
        count = dropped[(agent, n)]
        if count:
            assert f"[{count} earlier message{'s' if count > 1 else ''} of this conversation left out" in request.user
            kept = carried(request)
            assert 0 not in kept  # the opening prompt goes first
            assert n - 1 in kept  # the newest round stays
            assert kept == set(range(min(kept), n)), "what is kept is the newest, without gaps"
        assert request.size <= budget * 3, (agent, n, request.size)
    # the count grows as the conversation grows
    assert dropped[("alice", 10)] > dropped[("alice", 6)] > 0


def test_the_journal_and_checkpoint_record_the_mode(fake_llm):
    fake = fake_llm(responder=marking)
    run(fake, "window:2", 2)
    start = next(e for e in journal("logs/modes_journal.jsonl") if e["event"] == "run_start")
    assert start["context"] == "window:2"
    assert read_json("logs/modes_checkpoint.json")["context"] == "window:2"


def test_probes_come_after_the_conversation_in_full_mode_and_alone_in_memory_mode(fake_llm):
    topic = {"title": "Probed", "initial_prompt": OPENING,
             "coherence_probes": [{"after_round": 3, "question": "PROBE-Q which port?", "expect": ["7070"]}]}
    for mode in ("memory", "full"):
        fake = fake_llm(responder=marking)
        orch = orchestrator(team(fake.url, *NAMES, tool_mode="native"), topic=Topic.from_dict(topic, name="probed"),
                            context=mode,
                            log_dir=f"{mode}/logs", agents_dir=f"{mode}/agents", output_dir=f"{mode}/out")
        orch.run(max_rounds=3)
        probes = [r for r in fake.chats if "PROBE-Q" in r.user]
        assert len(probes) == 3
        for request in probes:
            assert request.tool_names == ["recall"]
            if mode == "memory":
                assert request.user.startswith("Coherence check after round 3: PROBE-Q")
            else:
                assert carried(request) == {0, 1, 2, 3}
                assert request.user.rstrip().endswith("Answer in a few sentences.")


def resume(fake, context, rounds):
    topic = Topic.from_dict({"title": "Modes", "initial_prompt": OPENING}, name="modes")
    orch = orchestrator(team(fake.url, *NAMES), topic=topic, context=context)
    orch.run(max_rounds=rounds, resume=True)
    return orch


@pytest.mark.parametrize("keep_checkpoint", [True, False])
def test_a_resumed_full_run_carries_the_rounds_before_the_stop(fake_llm, keep_checkpoint):
    first = fake_llm(responder=marking)
    run(first, "full", 4, checkpoint_every=2)
    if not keep_checkpoint:  # killed before any checkpoint: the journal alone
        (__import__("pathlib").Path("logs/modes_checkpoint.json")).unlink()
    second = fake_llm(responder=marking)
    orch = resume(second, None, 6)  # no mode given: the run's own
    assert str(orch.context) == "full"
    firsts = first_requests(second)
    assert carried(firsts[("alice", 5)]) == {0, 1, 2, 3, 4}
    assert carried(firsts[("carol", 6)]) == {0, 1, 2, 3, 4, 5}


def test_resuming_in_another_mode_is_refused(fake_llm):
    run(fake_llm(responder=marking), "full", 2)
    with pytest.raises(CheckpointError, match="used context full; resume it with --context full"):
        resume(fake_llm(responder=marking), "memory", 4)


@pytest.mark.parametrize("value", ["fulll", "window:0", "window:", "window:x", "", "memory:2"])
def test_a_bad_mode_is_a_config_error(value):
    with pytest.raises(ConfigError, match="not one of memory, full, window:N"):
        ContextMode.parse(value)


def test_modes_read_and_print_back():
    assert str(ContextMode.parse(" Window:3 ")) == "window:3"
    assert ContextMode.parse(None) == ContextMode.parse("memory")
    assert ContextMode.parse("window:12").slug == "window-12"


@pytest.mark.parametrize("value", ["sometimes", "window:0"])
def test_run_with_a_bad_context_is_one_error_line(azclaw, fake_llm, value):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--context", value, "--max-rounds", "1")
    assert_one_error_line(proc, "context", value)
    assert not fake.chats


def test_run_context_full_from_the_command_line(azclaw, fake_llm):
    fake = fake_llm(responder=marking)
    proc = azclaw("run", "--topic", "long-coherence", "--endpoint", fake.url, "--context", "full",
                  "--max-rounds", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    start = next(e for e in journal("logs/long_coherence_journal.jsonl") if e["event"] == "run_start")
    assert start["context"] == "full"
    third = [r for r in fake.chats if r.round == 3 and r.agent == "architect"][0]
    assert "Messages of round 1:" in third.user and "Messages of round 2:" in third.user
    assert "Round 1 opened with:\n\nWe start an invoicing service" in third.user
