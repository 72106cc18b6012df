"""The run journal: every turn exactly once, even across a kill and a resume."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from azclaw.checkpoint import Checkpoint
from azclaw.runlog.journal import VERSION, Journal, read_journal
from azclaw.runlog.reader import RunLog
from longrun import AGENTS, EXPECTED_SCORE, KILL_ROUND, LAST_ROUND, killed_and_resumed_run

TURN_FIELDS = {"v", "event", "time", "run", "round", "phase", "agent", "prompt_tokens", "completion_tokens",
               "context_tokens", "context_chars", "requests", "seconds", "tokens_per_second", "tool_calls",
               "tool_errors", "memories", "files", "errors", "text", "empty", "truncated", "calls",
               "cached_tokens", "mode", "switched", "problems", "dropped", "tools", "repeats"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return killed_and_resumed_run(tmp_path_factory.mktemp("longrun"))


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_turn_of_a_killed_and_resumed_run_is_in_the_journal_exactly_once(run):
    turns = [(e["round"], e["agent"]) for e in lines(run.journal) if e["event"] == "turn"]
    counts = Counter(turns)
    assert set(counts) == {(r, a) for r in range(1, LAST_ROUND + 1) for a in AGENTS}
    assert set(counts.values()) == {1}
    assert turns == sorted(turns, key=lambda t: t[0])  # in round order: the redone rounds replaced, not appended


def test_a_resume_keeps_the_turns_that_finished_before_the_kill_and_runs_only_the_rest(run):
    first_run, second_run = [e["run"] for e in lines(run.journal) if e["event"] == "run_start"]
    assert not run.superseded.exists()  # nothing is redone, so nothing is superseded
    kept = lines(run.journal)
    by_turn = {(e["round"], e["agent"]): e["run"] for e in kept if e["event"] == "turn"}
    assert by_turn[(KILL_ROUND, "architect")] == first_run  # it had finished when the kill came
    assert by_turn[(KILL_ROUND, "developer")] == by_turn[(KILL_ROUND, "reviewer")] == second_run
    assert {run_id for (r, _), run_id in by_turn.items() if r > KILL_ROUND} == {second_run}
    assert {run_id for (r, _), run_id in by_turn.items() if r < KILL_ROUND} == {first_run}
    assert [e["round"] for e in kept if e["event"] == "round_end"] == list(range(1, LAST_ROUND + 1))


def test_run_start_lines_record_the_process_the_phases_and_the_probes(run):
    first, second = [e for e in lines(run.journal) if e["event"] == "run_start"]
    assert first["pid"] == run.first_pid and first["host"]
    assert first["resumed_from"] is None and second["resumed_from"] == KILL_ROUND - 1
    assert (second["first_round"], second["last_round"]) == (KILL_ROUND, LAST_ROUND)
    assert [p["name"] for p in first["phases"]] == ["Design", "Build", "Review"]
    assert first["probes"][0] == {"after_round": 5, "question": "What database engine did we choose?",
                                  "expect": ["postgres|postgresql"]}
    assert first["agents"] == AGENTS


def test_each_line_carries_the_version_and_turns_carry_every_documented_field(run):
    events = lines(run.journal)
    assert {e["v"] for e in events} == {VERSION}
    for turn in (e for e in events if e["event"] == "turn"):
        assert set(turn) == TURN_FIELDS
        assert turn["prompt_tokens"] >= turn["context_tokens"] > 0
    developer_12 = next(e for e in events if e["event"] == "turn" and e["round"] == 12
                        and e["agent"] == "developer")
    assert developer_12["tools"] == {"write_file": 1} and developer_12["files"] == ["app/step12.py"]
    assert developer_12["phase"] == "Build" and developer_12["requests"] == 2
    architect_9 = next(e for e in events if e["event"] == "turn" and e["round"] == 9 and e["agent"] == "architect")
    assert architect_9["memories"] == ["decision-9"]


def test_checkpoints_stop_and_end_lines_are_journaled(run):
    events = lines(run.journal)
    assert [e["round"] for e in events if e["event"] == "checkpoint"] == [5, 10, 15, 20, LAST_ROUND]
    end = events[-1]
    assert end["event"] == "run_end" and end["reason"] == "max_rounds" and end["round"] == LAST_ROUND
    assert end["stats"]["rounds"] == LAST_ROUND


def test_probe_answers_are_journaled_once_each_and_scored(run):
    probes = [e for e in lines(run.journal) if e["event"] == "probe"]
    assert Counter((p["round"], p["agent"]) for p in probes) == Counter(
        {(r, a): 1 for r in (5, 12, 20, LAST_ROUND) for a in AGENTS})
    scored = [p for p in probes if p["correct"] is not None]
    assert (sum(p["correct"] for p in scored), len(scored)) == EXPECTED_SCORE
    # round 12 was finished before the kill: its answers are kept, not asked again
    assert next(p for p in probes if p["round"] == 12 and p["agent"] == "developer")["answer"] == "Python."
    checkpoint = Checkpoint.load(run.logs / "todo_api_checkpoint.json")
    assert [(a["round"], a["agent"], a["correct"]) for a in checkpoint.probe_answers] == [
        (p["round"], p["agent"], p["correct"]) for p in probes]


def test_the_journal_counts_exactly_what_the_checkpoint_stats_counted(run):
    events = lines(run.journal)
    stats = Checkpoint.load(run.logs / "todo_api_checkpoint.json").stats
    for agent in AGENTS:
        mine = [e for e in events if e["event"] in ("turn", "probe") and e["agent"] == agent]
        assert sum(e["prompt_tokens"] for e in mine) == stats.agents[agent].prompt_tokens
        assert sum(e["completion_tokens"] for e in mine) == stats.agents[agent].completion_tokens
        assert sum(len(e.get("memories", [])) for e in mine) == stats.agents[agent].memories


# -- the Journal class on its own ---------------------------------------------

def write_run(path, rounds, agents=("a", "b"), resumed_from=None):
    journal = Journal(path)
    journal.write("run_start", topic="t", resumed_from=resumed_from, agents=list(agents))
    for r in rounds:
        for a in agents:
            journal.write("turn", round=r, agent=a)
        if r % 2 == 0:
            journal.write("checkpoint", round=r, path="t_checkpoint.json")
    return journal


def test_rewind_keeps_the_finished_turns_of_the_round_a_resume_takes_up_and_moves_later_ones(tmp_path):
    path = tmp_path / "t_journal.jsonl"
    journal = write_run(path, range(1, 6))
    journal.write("probe", round=3, agent="a", correct=True)
    journal.write("probe", round=5, agent="a", correct=False)
    assert journal.rewind(2) == 6  # turns of 4-5, checkpoint 4, probe 5: round 3 is the one taken up
    kept = read_journal(path)
    assert [(e["event"], e.get("round")) for e in kept] == [
        ("run_start", None), ("turn", 1), ("turn", 1), ("turn", 2), ("turn", 2), ("checkpoint", 2),
        ("turn", 3), ("turn", 3), ("probe", 3)]
    assert len(read_journal(journal.superseded_path)) == 6


def test_rewind_with_nothing_after_the_round_leaves_the_journal_alone(tmp_path):
    path = tmp_path / "t_journal.jsonl"
    journal = write_run(path, range(1, 3))
    before = path.read_bytes()
    assert journal.rewind(2) == 0
    assert path.read_bytes() == before and not journal.superseded_path.exists()


def test_a_torn_last_line_is_skipped_and_a_resume_does_not_glue_the_next_line_to_it(tmp_path):
    path = tmp_path / "t_journal.jsonl"
    write_run(path, range(1, 3))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"v": 2, "event": "turn", "round": 3, "ag')  # the kill came mid-write
    assert len(read_journal(path)) == 6
    resumed = Journal.open(path, resumed_from=2)
    resumed.write("run_start", topic="t", resumed_from=2)
    resumed.write("turn", round=3, agent="a")
    assert [(e["event"], e.get("round")) for e in read_journal(path)][-2:] == [("run_start", None), ("turn", 3)]
    assert '"v": 2' not in path.read_text(encoding="utf-8")  # the torn line is gone, not glued to the next


def test_a_fresh_run_archives_the_old_journal_of_its_topic(tmp_path):
    path = tmp_path / "t_journal.jsonl"
    old = write_run(path, range(1, 5))
    old.rewind(1)
    fresh = Journal.open(path)
    fresh.write("run_start", topic="t", resumed_from=None)
    archived = sorted(p.name for p in tmp_path.iterdir())
    assert len(archived) == 3 and "t_journal.jsonl" in archived
    assert any(n.startswith("t_journal.20") and n.endswith(".superseded.jsonl") for n in archived)
    assert len(read_journal(path)) == 1
    assert not list(tmp_path.glob("*_journal.superseded.jsonl"))  # moved along with its journal


def test_readers_take_the_last_fresh_run_and_the_last_copy_of_a_turn(tmp_path):
    path = tmp_path / "old_journal.jsonl"
    write_run(path, range(1, 4))  # an older journal format held several runs in one file
    write_run(path, range(1, 3))
    Journal(path).write("turn", round=2, agent="a", text="again")
    run = RunLog.read(path)
    assert len(run.starts) == 1
    assert [(t.round, t.agent) for t in run.turns] == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]
    assert run.turns[2].text == "again"


def test_lines_edited_by_hand_into_nonsense_are_skipped_by_readers(tmp_path):
    path = tmp_path / "t_journal.jsonl"
    good = {"v": VERSION, "event": "turn", "round": 1, "agent": "a", "run": "r"}
    lines = [good, {**good, "round": "three", "agent": "b"}, {**good, "round": None, "agent": "c"}, [1, 2], "x"]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n{torn")
    assert [t.agent for t in RunLog.read(path).turns] == ["a"]


def test_every_tool_call_is_in_the_journal_with_its_arguments_result_and_time(fake_llm, workdir):
    from azclaw import Agent, Orchestrator
    from fakellm import call, calls, text
    code = "print('hello from the sandbox')\n" + "# padding\n" * 400  # longer than the generic cut
    fake = fake_llm(per_agent={"dev": [
        calls(("write_file", {"path": "a.py", "content": "x = 1\n" * 1000}), ("read_file", {"path": "nope.py"})),
        call("run_python", {"code": code}), call("run_python", {"code": code}), text("done")]})
    Orchestrator([Agent("dev", endpoint=fake.url, can_write=True, retries=0)], verbose=False).run(max_rounds=1)
    [turn] = [e for e in lines(workdir / "logs" / "task_journal.jsonl") if e["event"] == "turn"]
    write, read, run, again = turn["calls"]
    assert (write["tool"], write["ok"], write["step"], write["result"]) == ("write_file", True, 0, "Wrote 6000 bytes to a.py.")
    assert write["arguments_chars"] > 6000 and len(write["arguments"]) < 2100 and "more characters" in write["arguments"]
    assert (read["tool"], read["ok"]) == ("read_file", False) and read["result"].startswith("ERROR:")
    assert run["tool"] == "run_python" and json.loads(run["arguments"])["code"] == code
    assert "hello from the sandbox" in run["result"] and run["seconds"] > 0
    assert again["duplicate"] is True and again["step"] == 2
