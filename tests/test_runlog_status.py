"""`azclaw status`: read a run's journal and checkpoint, during the run and after."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from azclaw.runlog.journal import Journal
from azclaw.runlog.common import alive as _alive
from azclaw.runlog.status import format_status, read_status
from azclaw.stats import Coherence
from helpers import CLI_TIMEOUT
from longrun import AGENTS, EXPECTED_SCORE, KILL_ROUND, LAST_ROUND, killed_and_resumed_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return killed_and_resumed_run(tmp_path_factory.mktemp("longrun"))


def azclaw(cwd, *args):
    return subprocess.run([sys.executable, "-m", "azclaw", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT)


def test_status_from_another_terminal_shows_the_live_run(run):
    text = run.status_during
    assert f"running (pid {run.first_pid}" in text
    assert f"round {KILL_ROUND}/{LAST_ROUND} in progress ({KILL_ROUND - 1} done), phase Build" in text
    assert "coherence   5/6 answers correct" in text  # probes of rounds 5 and 12 so far
    assert "checkpoint  logs/todo_api_checkpoint.json (round 10)" in text
    assert re.search(r"^  working     developer for \d+s \(since \d\d:\d\d:\d\d UTC\)$", text, re.M), \
        "the developer's request of round 13 is held"
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] in ([a] for a in AGENTS)}
    assert rows["architect"][1] == str(KILL_ROUND)  # its turn of round 13 is done; the developer's is held
    assert rows["developer"][1] == rows["reviewer"][1] == str(KILL_ROUND - 1)


def test_status_json_during_the_run_is_for_scripts(run):
    data = run.status_json_during
    assert (data["state"], data["running"], data["pid"]) == ("running", True, run.first_pid)
    assert (data["round"], data["current_round"], data["last_round"]) == (KILL_ROUND - 1, KILL_ROUND, LAST_ROUND)
    assert (data["phase"], data["checkpoint_round"], data["sessions"]) == ("Build", 10, 1)
    assert data["coherence"] == {"correct": 5, "scored": 6, "asked": 6, "unanswered": 0,
                                 "text": "5/6 answers correct"}
    assert [a["name"] for a in data["agents"]] == AGENTS
    assert [(w["agent"], w["round"]) for w in data["working"]] == [("developer", KILL_ROUND)]


def test_status_after_a_kill_says_the_run_died_and_how_far_it_got(run):
    data = run.status_after_kill
    assert (data["state"], data["running"], data["current_round"]) == ("killed", False, None)
    assert data["round"] == KILL_ROUND - 1 and data["checkpoint_round"] == 10
    assert data["working"] == [], "the turn that was under way died with the process"


def test_status_after_the_resumed_run_finished(run):
    result = azclaw(run.tmp, "status", "--log-dir", "logs")
    assert result.returncode == 0, result.stderr
    assert "state       ended: max_rounds" in result.stdout
    assert f"progress    round {LAST_ROUND}/{LAST_ROUND}, phase Review" in result.stdout
    assert "over 2 sessions" in result.stdout
    assert f"coherence   {EXPECTED_SCORE[0]}/{EXPECTED_SCORE[1]} answers correct" in result.stdout
    data = json.loads(azclaw(run.tmp, "status", "--log-dir", "logs", "--json").stdout)
    assert (data["running"], data["round"], data["sessions"], data["checkpoint_round"]) == (False, 24, 2, 24)
    agents = {a["name"]: a for a in data["agents"]}
    assert {n: a["turns"] for n, a in agents.items()} == {a: LAST_ROUND for a in AGENTS}
    assert agents["architect"]["memories"] == 8 and agents["reviewer"]["memories"] == 4
    assert len(agents["developer"]["files"]) == 6 and agents["developer"]["tools"] == {"write_file": 6}
    assert all(a["tokens"] == a["prompt_tokens"] + a["completion_tokens"] > 0 for a in agents.values())
    assert data["last_errors"] == []


def test_the_end_of_run_summary_shows_the_coherence_score(run):
    log = (run.logs / "todo_api.log").read_text(encoding="utf-8")
    assert f"Coherence: {EXPECTED_SCORE[0]}/{EXPECTED_SCORE[1]} answers correct" in log


def test_status_without_a_journal_is_a_one_line_error(tmp_path):
    result = azclaw(tmp_path, "status", "--log-dir", "nowhere")
    assert result.returncode == 1
    assert result.stderr.startswith("azclaw: error: nowhere: no such folder")
    (tmp_path / "logs").mkdir()
    result = azclaw(tmp_path, "status")
    assert result.returncode == 1 and "no run journal here (looked for *_journal.jsonl)" in result.stderr


# -- unit level ------------------------------------------------------------------

def journal_with(path, **start):
    journal = Journal(path)
    journal.write("run_start", topic=path.name.split("_journal")[0], title="T", first_round=1, last_round=4,
                  agents=["a"], resumed_from=None, **start)
    journal.write("turn", round=1, phase=None, agent="a", prompt_tokens=10, completion_tokens=5, seconds=0.5,
                  tool_calls={"recall": 2}, memories=["m"], files=["x.py", "x.py"], errors=["HTTP 500 at /v1"])
    return journal


def test_a_run_whose_process_is_gone_reads_as_killed(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    journal_with(tmp_path / "t_journal.jsonl", pid=child.pid, host=socket.gethostname())
    status = read_status(tmp_path)
    assert (status.state, status.running, status.round) == ("killed", False, 1)
    assert "continue with azclaw run --resume" in format_status(status)
    assert status.last_errors == [{"round": 1, "agent": "a", "error": "HTTP 500 at /v1"}]
    row = status.agents["a"]
    assert (row.tokens, row.tokens_per_second, row.tool_calls, row.memories, row.files) == (
        15, 10.0, 2, 1, ["x.py"])


def test_a_journal_without_a_pid_or_from_another_host_reads_as_unknown(tmp_path):
    journal_with(tmp_path / "t_journal.jsonl", pid=os.getpid(), host="another-machine")
    assert read_status(tmp_path).state == "unknown"
    assert "it ran on another-machine" in format_status(read_status(tmp_path))


def test_the_writing_process_is_alive_only_while_it_runs():
    assert _alive(os.getpid(), "", None) is True
    assert _alive(None, "", None) is None


def test_status_reads_the_newest_journal_of_the_folder_or_the_file_given(tmp_path):
    journal_with(tmp_path / "old_journal.jsonl")
    newer = journal_with(tmp_path / "new_journal.jsonl")
    os.utime(tmp_path / "old_journal.jsonl", (1, 1))
    assert read_status(tmp_path).topic == "new"
    assert read_status(tmp_path / "old_journal.jsonl").topic == "old"
    newer.write("run_end", round=1, reason="stopped", stats={})
    assert read_status(tmp_path).reason == "stopped"


@pytest.mark.parametrize("answers, text", [
    ([], "no probes asked"),
    ([{"correct": None}], "1 probe answers, none scored"),
    ([{"correct": True}, {"correct": False}, {"correct": None}], "1/2 answers correct"),
    ([{"correct": True}] * 5 + [{"correct": False}], "5/6 answers correct"),
])
def test_coherence_counts_only_scored_answers(answers, text):
    assert str(Coherence.of(answers)) == text
