"""A kill at any instant loses at most the round in
progress and stores no memory twice; failed rounds are not done; one run per
topic and folder; a full disk is one line; empty, cut-off and unanswered
replies are visible. Through the real ``azclaw`` command where it matters."""

import json
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from azclaw import Topic
from azclaw.memory import parse_entries
from fakellm import Reply, call, error, text
from helpers import CLI_TIMEOUT, journal, orchestrator, read_json, run_file, team, wait_for

AGENTS = "alice,bob"


def remembering(request):
    """Every turn stores one memory named after its round, then answers."""
    if request.tool_results:
        return text(f"{request.agent} done with round {request.round}")
    return call("remember", {"text": f"decision of round {request.round}", "title": f"r{request.round}"})


def test_a_kill_before_the_first_checkpoint_resumes_from_the_journal_and_stores_nothing_twice(
        fake_llm, azclaw, azclaw_popen, workdir):
    held = threading.Event()
    release = threading.Event()

    def responder(request):
        if request.round == 3 and request.agent == "bob" and not release.is_set():
            held.set()
            return Reply(text="never arrives", gate=release)
        return remembering(request)

    fake = fake_llm(responder=responder)
    args = ("run", "--task", "Plan it", "--agents", AGENTS, "--endpoint", fake.url, "--max-rounds", "4", "--quiet")
    first = azclaw_popen(*args)
    wait_for(held.is_set, CLI_TIMEOUT, "bob's turn of round 3")
    first.send_signal(signal.SIGKILL)  # round 3 half done (alice finished, with a memory), no checkpoint yet
    first.wait(CLI_TIMEOUT)
    release.set()
    assert not list((workdir / "logs").glob("*_checkpoint.json"))
    before = len(fake.chats)
    resumed = azclaw(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert {r.round for r in fake.chats[before:]} == {3, 4}  # rounds 1 and 2 were finished: not redone
    checkpoint = read_json(run_file(workdir / "logs", "_checkpoint.json"))
    assert checkpoint["round"] == 4 and checkpoint["stats"]["agents"]["alice"]["turns"] == 4
    memories = sorted(e.text for p in (workdir / "agents" / "alice").rglob("remember/r*.txt")
                      for e in parse_entries(p.read_text()))
    assert memories == [f"decision of round {n}" for n in range(1, 5)]  # round 3's memory once
    notes = sorted(p.name for p in (workdir / "agents" / "alice").rglob("notes/*"))
    assert notes == [f"round-{n:04d}.txt" for n in range(1, 5)]  # each round's message archived once
    turns = [(e["round"], e["agent"]) for e in journal(run_file(workdir / "logs", "_journal.jsonl"))
             if e["event"] == "turn"]
    assert sorted(turns) == [(r, a) for r in range(1, 5) for a in ("alice", "bob")]


def test_a_second_run_of_the_same_topic_in_the_same_folder_is_refused_naming_the_first(
        fake_llm, azclaw, azclaw_popen):
    release = threading.Event()
    fake = fake_llm(responder=lambda request: Reply(text="slow", gate=release))
    args = ("run", "--task", "Same task", "--agents", "solo", "--endpoint", fake.url, "--max-rounds", "1")
    first = azclaw_popen(*args)
    try:
        wait_for(lambda: fake.chats, CLI_TIMEOUT, "the first run's request")
        second = azclaw(*args)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"another azclaw run (pid {first.pid})" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        release.set()
    assert first.wait(CLI_TIMEOUT) == 0
    assert azclaw(*args).returncode == 0  # its lock went with it


def test_runs_of_different_tasks_in_one_folder_keep_their_own_checkpoints(fake_llm, azclaw, workdir):
    fake = fake_llm()
    for task in ("Build the API", "Write the docs"):
        proc = azclaw("run", "--task", task, "--agents", "solo", "--endpoint", fake.url, "--max-rounds", "1")
        assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (workdir / "logs").glob("*_checkpoint.json"))
    assert len(names) == 2 and names[0].startswith("build_the_api_") and names[1].startswith("write_the_docs_")


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare to mount a small file system")
def test_a_full_disk_ends_the_run_with_one_line_and_keeps_the_last_checkpoint(fake_llm, workdir):
    fake = fake_llm(responder=lambda request: text("x" * 30_000))
    (workdir / "logs").mkdir()
    py = sys.executable
    command = (f"mount -t tmpfs -o size=160k tmpfs logs || exit 99; {py} -m azclaw run --task T --name t "
               f"--agents solo --endpoint {fake.url} --max-rounds 40 --checkpoint-every 1 --quiet; "
               f"echo \"exit $?\" >&2; {py} -c 'import json; "
               "print(json.load(open(\"logs/t_checkpoint.json\"))[\"round\"])' >&2")
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", command], cwd=workdir, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT)
    if proc.returncode == 99:
        pytest.skip(f"no small file system could be mounted here: {proc.stderr.strip()}")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("azclaw:")]
    assert len(lines) == 1 and lines[0].startswith("azclaw: error: logs/t_"), proc.stderr
    assert "No space left on device" in lines[0] and "Traceback" not in proc.stderr
    assert "exit 1" in proc.stderr
    saved = int(proc.stderr.strip().splitlines()[-1])  # the checkpoint left on the full disk is whole
    assert 1 <= saved < 40


def test_a_probe_the_server_never_answered_is_unanswered_not_wrong(fake_llm, workdir):
    topic = Topic.from_dict({"title": "P", "coherence_probes": [
        {"after_round": 1, "question": "Which database?", "expect": ["postgres"]}]}, name="p")
    fake = fake_llm(responder=lambda r: error(503) if "Coherence check" in r.user else text("Postgres it is."))
    orch = orchestrator(team(fake.url, "alice"), topic=topic)
    orch.run(max_rounds=1)
    [answer] = orch.probe_answers
    assert answer["correct"] is None and answer["unanswered"] is True
    assert "Coherence: 0 probe answers, none scored (1 unanswered)" in orch.summary() or \
        "(1 unanswered)" in orch.summary()


def test_a_silent_agent_is_nudged_once_a_turn_reported_and_the_team_goes_on(fake_llm, workdir):
    fake = fake_llm(per_agent={"bob": [Reply(text="", finish_reason="length")] * 20})
    orch = orchestrator(team(fake.url, "alice", "bob"), max_failed_rounds=3)
    orch.run(max_rounds=6)
    assert orch.last_round == 6 and orch.ending.reason == "max_rounds"
    assert len(fake.chats_of("alice")) == 6 and all(m.text for m in orch.history if m.agent == "alice")
    bob = fake.chats_of("bob")
    assert len(bob) == 12  # every turn: the empty reply, then one retry with a nudge
    assert all("Your reply was empty" in r.messages[-1]["content"] for r in bob[1::2])
    assert orch.stats.agents["bob"].empty == 6 and orch.stats.agents["bob"].truncated == 12
    log = (workdir / "logs" / "task.log").read_text()
    assert "bob gave only empty replies for 3 rounds in a row" in log
    warned = [e for e in journal(orch.journal_path) if e["event"] == "warning" and e["agent"] == "bob"]
    assert [(w["agent"], w["what"], w["round"]) for w in warned] == [("bob", "silent", 3)]


def test_a_silent_agent_stops_the_run_only_when_asked(fake_llm, workdir):
    fake = fake_llm(per_agent={"bob": [Reply(text="")] * 20})
    orch = orchestrator(team(fake.url, "alice", "bob"), stop_on_silent_agent=2)
    orch.run(max_rounds=6)
    assert orch.ending.reason == "no_progress" and "bob gave only empty replies for 2 rounds" in orch.ending.detail
    assert orch.last_round == 1  # stopped between turns, in round 2 after bob's turn
    assert journal(orch.journal_path)[-1]["reason"] == "no_progress"


def test_the_first_ctrl_c_is_acknowledged_at_once(fake_llm, azclaw_popen, workdir):
    release = threading.Event()
    fake = fake_llm(responder=lambda request: Reply(text="slow", gate=release))
    proc = azclaw_popen("run", "--task", "T", "--agents", "solo", "--endpoint", fake.url, "--max-rounds", "3")
    try:
        wait_for(lambda: fake.chats, CLI_TIMEOUT, "the first request")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "Ctrl+C again to stop now" in (workdir / "err0.txt").read_text(), CLI_TIMEOUT,
                 "the acknowledgement")
        assert "stopping after round 1 finishes" in (workdir / "err0.txt").read_text()
    finally:
        release.set()
    assert proc.wait(CLI_TIMEOUT) == 0
    assert json.loads(run_file(workdir / "logs", "_journal.jsonl").read_text().splitlines()[-1])["reason"] == \
        "signal"


def test_the_message_budget_is_an_option_of_the_command(fake_llm, azclaw):
    fake = fake_llm(responder=lambda request: text("x" * 3000 + " END-OF-MESSAGE"))
    proc = azclaw("run", "--task", "T", "--agents", "solo", "--endpoint", fake.url, "--max-rounds", "2",
                  "--message-budget", "500")
    assert proc.returncode == 0, proc.stderr
    round2 = [r for r in fake.chats if r.round == 2][0].user
    assert "END-OF-MESSAGE" not in round2 and "more characters; the full text is in" in round2


def test_a_kill_after_a_remember_and_before_the_turn_ends_stores_the_decision_once(
        fake_llm, azclaw, azclaw_popen, workdir):
    held = threading.Event()
    release = threading.Event()
    second = {"run": False}

    def responder(request):
        if request.round == 2 and request.agent == "alice":
            if request.tool_results and not second["run"]:  # alice remembered; her turn is not journaled yet
                held.set()
                return Reply(text="never arrives", gate=release)
            if not request.tool_results:  # the turn runs again: the same decision under another title
                title = "port-decision" if not second["run"] else "Port we chose"
                return call("remember", {"text": "The server listens on port 7070.", "title": title})
        return remembering(request)

    fake = fake_llm(responder=responder)
    args = ("run", "--task", "Plan it", "--agents", AGENTS, "--endpoint", fake.url, "--max-rounds", "3", "--quiet")
    first = azclaw_popen(*args)
    wait_for(held.is_set, CLI_TIMEOUT, "alice's turn of round 2, after her remember")
    first.send_signal(signal.SIGKILL)
    first.wait(CLI_TIMEOUT)
    second["run"] = True
    release.set()
    resumed = azclaw(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    stored = [p for p in (workdir / "agents" / "alice").rglob("*.txt")
              if "port 7070" in p.read_text() and p.parent.name == "remember"]
    assert len(stored) == 1, [str(p) for p in stored]  # not a second time under the new title
    assert stored[0].read_text().count("The server listens on port 7070.") == 1
    turns = [(e["round"], e["agent"]) for e in journal(run_file(workdir / "logs", "_journal.jsonl"))
             if e["event"] == "turn"]
    assert sorted(turns) == [(r, a) for r in range(1, 4) for a in ("alice", "bob")]
