"""Parallel rounds: same results as a sequential run, every
request flat, the stable part of the system prompt shared across rounds."""

import json
import os
import signal
import subprocess
import sys


from azclaw import Agent, Orchestrator, Topic
from azclaw.checkpoint import Checkpoint
from helpers import CLI_TIMEOUT, run_file, wait_for
from fakellm import FakeLLM, Reply, call, text


def scripted(request) -> Reply:
    """Deterministic per agent and round: remember, write (developer), answer."""
    agent = request.agent
    user = request.messages[1]["content"]
    round_no = 1 if "Messages of round" not in user else int(user.split("Messages of round ")[1].split(":")[0]) + 1
    steps = sum(1 for m in request.messages if m["role"] == "assistant")
    if steps == 0:
        return call("remember", {"text": f"{agent} decision {round_no}", "title": f"{agent}-r{round_no}"})
    if steps == 1 and agent == "developer":
        return call("write_file", {"path": f"mod{round_no}.py", "content": f"ROUND = {round_no}\n"})
    return text(f"{agent} finished round {round_no}")


def run_team(tmp_path, parallel: bool, rounds=6):
    os.chdir(tmp_path)
    with FakeLLM(responder=scripted) as fake:
        team = [Agent("architect", endpoint=fake.url), Agent("developer", endpoint=fake.url, can_write=True),
                Agent("reviewer", endpoint=fake.url)]
        orch = Orchestrator(team, parallel=parallel, verbose=False)
        orch.set_task("Build it")
        stats = orch.run(max_rounds=rounds)
    return orch, stats, fake


def _comparable(stats):
    data = stats.to_dict()
    data.pop("elapsed")
    for agent in data["agents"].values():
        agent.pop("seconds")
        agent.pop("tokens_per_second")
    return data


def test_a_parallel_run_gives_the_same_results_as_a_sequential_one(tmp_path):
    seq_dir, par_dir = tmp_path / "seq", tmp_path / "par"
    seq_dir.mkdir(), par_dir.mkdir()
    seq, seq_stats, _ = run_team(seq_dir, parallel=False)
    par, par_stats, fake = run_team(par_dir, parallel=True)
    assert _comparable(seq_stats) == _comparable(par_stats)
    assert [m.to_dict() for m in seq.history] == [m.to_dict() for m in par.history]

    def files(root):
        return sorted(str(p.relative_to(root)).replace(
            next(iter([d for d in p.parts if d[:4].isdigit() and "-" in d]), "DAY"), "DAY")
            for p in root.rglob("*.txt") if "remember" in p.parts)

    assert files(seq_dir / "agents") == files(par_dir / "agents")
    assert sorted(os.listdir(seq_dir / "output")) == sorted(os.listdir(par_dir / "output"))
    seq_cp = Checkpoint.load(run_file(seq_dir / "logs", "_checkpoint.json"))
    par_cp = Checkpoint.load(run_file(par_dir / "logs", "_checkpoint.json"))
    assert seq_cp.memory_counts == par_cp.memory_counts == {"architect": 6, "developer": 6, "reviewer": 6}
    assert [m.to_dict() for m in seq_cp.history] == [m.to_dict() for m in par_cp.history]


def test_parallel_agents_of_a_round_are_in_flight_at_the_same_time(tmp_path):
    os.chdir(tmp_path)
    with FakeLLM(delay=0.4) as fake:
        team = [Agent(n, endpoint=fake.url) for n in ("a1", "a2", "a3")]
        Orchestrator(team, parallel=True, verbose=False).run(max_rounds=2)
    firsts = sorted(r.time for r in fake.chats)[:3]
    # all three requests of round 1 arrived before any reply could have come back
    assert firsts[-1] - firsts[0] < 0.4
    journal = [json.loads(l) for l in (run_file(tmp_path / "logs", "_journal.jsonl")).read_text().splitlines()]
    assert sorted((e["round"], e["agent"]) for e in journal if e["event"] == "turn") == [
        (1, "a1"), (1, "a2"), (1, "a3"), (2, "a1"), (2, "a2"), (2, "a3")]


def test_the_stable_part_of_the_system_prompt_is_a_shared_prefix_across_rounds(tmp_path):
    os.chdir(tmp_path)
    topic = Topic.from_dict({"title": "T", "system_context": "Context.", "phases": [
        {"name": "One", "rounds": [1, 3], "focus": "first"}, {"name": "Two", "rounds": [4, 6], "focus": "second"}]})
    with FakeLLM() as fake:
        # native: auto would move this model that never calls tools to text calls, a new stable part
        Orchestrator([Agent("architect", endpoint=fake.url, tool_mode="native")], topic=topic, verbose=False).run()
    systems = [r.messages[0]["content"] for r in fake.chats]
    assert len(systems) == 6
    stable = {s[: s.index("Current round:")] for s in systems}
    assert len(stable) == 1  # everything before the round line is identical in every round
    for a, b in zip(systems, systems[1:]):
        assert len(os.path.commonprefix([a, b])) >= 0.9 * len(a)
    assert "Phase 2 of 2: Two (rounds 4-6)" in systems[3] and "Focus: second" in systems[3]


def test_long_previous_messages_are_trimmed_with_a_pointer_to_the_journal(tmp_path):
    os.chdir(tmp_path)
    with FakeLLM(per_agent={"architect": [text("A" * 20000)]}) as fake:
        Orchestrator([Agent("architect", endpoint=fake.url)], message_budget=1000, verbose=False).run(max_rounds=2)
    user = fake.chats[1].messages[1]["content"]
    assert user.count("A") <= 1000 + 5 and "more characters; the full text is in" in user
    assert "task_journal.jsonl" in user


def test_old_tool_results_are_cut_when_a_turn_outgrows_its_context_budget(tmp_path):
    os.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    for n in range(4):
        (tmp_path / "src" / f"f{n}.txt").write_text(f"{n}" * 3900)
    script = [call("read_file", {"path": f"f{n}.txt"}) for n in range(4)] + [text("done")]
    with FakeLLM(per_agent={"architect": script}) as fake:
        Orchestrator([Agent("architect", endpoint=fake.url)], source_dirs=[tmp_path / "src"],
                     context_budget=2500, verbose=False).run(max_rounds=1)
    sizes = [r.size for r in fake.chats]
    assert max(sizes) < 2500 * 3 + 4000
    last = fake.chats[-1].messages
    assert "[earlier tool result cut" in last[3]["content"] and last[-1]["content"] == "3" * 3900


def test_sigterm_during_a_parallel_round_still_finishes_the_round(tmp_path):
    with FakeLLM(delay=0.5) as fake:
        proc = subprocess.Popen([sys.executable, "-m", "azclaw", "run", "--task", "t", "--endpoint", fake.url,
                                 "--parallel", "--max-rounds", "30"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: len(fake.chats) >= 4 or proc.poll() is not None, what="round 2 under way")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=CLI_TIMEOUT)
    assert proc.returncode == 0, err
    checkpoint = Checkpoint.load(run_file(tmp_path / "logs", "_checkpoint.json"))
    assert 2 <= checkpoint.round < 30
    assert [m.round for m in checkpoint.history].count(checkpoint.round) == 3


def test_max_concurrency_bounds_the_turns_in_flight(fake_llm, workdir):
    fake = fake_llm(delay=0.2)
    team = [Agent(f"agent{i}", endpoint=fake.url) for i in range(7)]
    Orchestrator(team, parallel=True, max_concurrency=3, verbose=False).run(max_rounds=2)
    assert len(fake.chats) == 14 and fake.most_at_once <= 3
    turns = [json.loads(line) for line in run_file(workdir / "logs", "_journal.jsonl").read_text().splitlines()]
    assert sorted((e["round"], e["agent"]) for e in turns if e["event"] == "turn") == \
        sorted((r, a.name) for r in (1, 2) for a in team)


def remember_each_turn(request) -> Reply:
    """Every turn of every agent: remember once, then answer."""
    if not request.tool_results:
        return call("remember", {"text": f"{request.agent} in round {request.round}",
                                 "title": f"{request.agent}-r{request.round}"})
    return text(f"{request.agent} remembered round {request.round}")


def test_fifty_agents_for_twenty_rounds_in_parallel_keep_every_turn_and_memory(fake_llm, workdir):
    fake = fake_llm(responder=remember_each_turn)
    names = [f"agent{i:02d}" for i in range(50)]
    orch = Orchestrator([Agent(n, endpoint=fake.url) for n in names], parallel=True, max_concurrency=25,
                        checkpoint_every=10, verbose=False)
    stats = orch.run(max_rounds=20)
    events = [json.loads(line) for line in run_file(workdir / "logs", "_journal.jsonl").read_text().splitlines()]
    turns = [e for e in events if e["event"] == "turn"]
    assert sorted((t["round"], t["agent"]) for t in turns) == sorted((r, n) for r in range(1, 21) for n in names)
    assert not any(t["errors"] for t in turns)
    assert all(t["memories"] == [f"{t['agent']}-r{t['round']}"] for t in turns)
    assert [e["round"] for e in events if e["event"] == "round_end"] == list(range(1, 21))
    assert orch.memory.counts() == {n: 20 for n in names}
    assert stats.memories_stored == 1000 and stats.agents["agent07"].turns == 20
    checkpoint = Checkpoint.load(run_file(workdir / "logs", "_checkpoint.json"))
    assert checkpoint.round == 20 and checkpoint.memory_counts == {n: 20 for n in names}
