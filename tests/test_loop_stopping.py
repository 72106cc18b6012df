"""A STOP file, ``azclaw stop``, SIGINT and SIGTERM each let the
round finish, write a checkpoint and exit 0; a stale STOP file is ignored."""

import signal
import threading

import pytest

from fakellm import Reply, text
from helpers import CLI_TIMEOUT, journal, orchestrator, read_json, team, wait_for, run_file

AGENTS = "alice:{url},bob:{url}"


def test_stop_file_created_during_a_run_ends_it_after_that_round(fake_llm, azclaw, workdir):
    def create_stop_in_round_2(request):
        if request.round == 2:
            (workdir / "STOP").touch()
        return text(f"{request.agent} r{request.round}")

    fake = fake_llm(responder=create_stop_in_round_2)
    proc = azclaw("run", "--task", "Stop me", "--agents", AGENTS.format(url=fake.url),
                  "--max-rounds", "6", "--quiet")

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [(r.agent, r.round) for r in fake.chats] == [("alice", 1), ("bob", 1), ("alice", 2), ("bob", 2)], \
        "the round in which STOP appeared is finished, no later round starts"
    checkpoint = read_json(run_file(workdir / "logs", "_checkpoint.json"))
    assert checkpoint["round"] == 2 and checkpoint["stats"]["rounds"] == 2
    assert [m["text"] for m in checkpoint["history"] if m["round"] == 2] == ["alice r2", "bob r2"]


def test_stop_file_via_the_api_returns_stats_of_the_finished_rounds(fake_llm, workdir):
    def create_stop_in_round_3(request):
        if request.round == 3:
            (workdir / "STOP").touch()
        return text("ok")

    fake = fake_llm(responder=create_stop_in_round_3)
    orch = orchestrator(team(fake.url, "alice"))
    stats = orch.run(max_rounds=10)
    assert stats.rounds == 3
    assert max(r.round for r in fake.chats) == 3
    assert read_json(orch.checkpoint_path)["round"] == 3
    events = journal(orch.journal_path)
    assert events[-1]["event"] == "run_end" and events[-1]["reason"] == "stopped"


def test_azclaw_stop_creates_the_stop_file(azclaw, workdir):
    proc = azclaw("stop")
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "STOP").is_file()


def test_azclaw_stop_then_a_running_round_stops(fake_llm, azclaw, workdir):
    def stop_from_cli(request):
        if request.round == 1 and request.agent == "bob":
            azclaw("stop")
        return text("ok")

    fake = fake_llm(responder=stop_from_cli)
    proc = azclaw("run", "--task", "Stop me", "--agents", AGENTS.format(url=fake.url), "--max-rounds", "5",
                  "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert {r.round for r in fake.chats} == {1}
    assert read_json(run_file(workdir / "logs", "_checkpoint.json"))["round"] == 1


def test_stale_stop_file_does_not_stop_a_new_run(fake_llm, azclaw, workdir):
    (workdir / "STOP").write_text("left over from yesterday\n")
    fake = fake_llm()
    proc = azclaw("run", "--task", "Run anyway", "--agents", AGENTS.format(url=fake.url), "--max-rounds", "3",
                  "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert [r.round for r in fake.chats] == [1, 1, 2, 2, 3, 3]
    assert read_json(run_file(workdir / "logs", "_checkpoint.json"))["round"] == 3


def test_a_stop_that_is_a_folder_is_one_warning_line_and_the_run_goes_on(fake_llm, azclaw, workdir):
    (workdir / "STOP").mkdir()
    (workdir / "STOP" / "keep.txt").write_text("someone's folder\n")
    fake = fake_llm()
    proc = azclaw("run", "--task", "Run anyway", "--agents", AGENTS.format(url=fake.url), "--max-rounds", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "STOP" in line]
    assert len(warnings) == 1 and "a folder" in warnings[0] and "does not stop the run" in warnings[0], proc.stderr
    assert [r.round for r in fake.chats] == [1, 1, 2, 2]
    assert (workdir / "STOP" / "keep.txt").read_text() == "someone's folder\n"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_round_finishes_the_round_checkpoints_exits_0_and_resume_continues(
        fake_llm, azclaw, azclaw_popen, workdir, signum):
    release = threading.Event()
    held = Reply(text="alice r1 (held)", gate=release)  # alice's first reply waits for the signal
    fake = fake_llm(per_agent={"alice": [held]}, responder=None)
    agents = AGENTS.format(url=fake.url)
    proc = azclaw_popen("run", "--task", "Signal me", "--agents", agents, "--max-rounds", "4")

    wait_for(lambda: len(fake.chats) >= 1 or proc.poll() is not None, CLI_TIMEOUT, "the first chat request")
    assert proc.poll() is None, (workdir / "err0.txt").read_text()
    proc.send_signal(signum)
    release.set()
    assert proc.wait(timeout=CLI_TIMEOUT) == 0, (workdir / "err0.txt").read_text()

    err = (workdir / "err0.txt").read_text()
    assert "Traceback" not in err
    assert [(r.agent, r.round) for r in fake.chats] == [("alice", 1), ("bob", 1)], "round 1 was finished"
    path = run_file(workdir / "logs", "_checkpoint.json")
    assert read_json(path)["round"] == 1
    end = [e for e in journal(run_file(workdir / "logs", "_journal.jsonl")) if e["event"] == "run_end"]
    assert end[0]["reason"] == "signal" and signum.name in end[0]["detail"]

    resumed = azclaw("run", "--task", "Signal me", "--agents", agents, "--max-rounds", "4", "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    later = fake.chats[2:]
    assert [r.round for r in later] == [2, 2, 3, 3, 4, 4]
    assert "[alice]\nalice r1 (held)" in later[0].user
    data = read_json(path)
    assert data["round"] == 4 and data["stats"]["rounds"] == 4
    assert data["stats"]["agents"]["alice"]["turns"] == 4


def test_signal_with_an_explicit_resume_path(fake_llm, azclaw, azclaw_popen, workdir):
    release = threading.Event()
    fake = fake_llm(per_agent={"alice": [Reply(text="first", gate=release)]})
    agents = AGENTS.format(url=fake.url)
    proc = azclaw_popen("run", "--task", "T", "--name", "task", "--agents", agents, "--max-rounds", "3", "--quiet")
    wait_for(lambda: len(fake.chats) >= 1 or proc.poll() is not None, CLI_TIMEOUT, "the first chat request")
    proc.send_signal(signal.SIGTERM)
    release.set()
    assert proc.wait(timeout=CLI_TIMEOUT) == 0
    resumed = azclaw("run", "--task", "T", "--name", "task", "--agents", agents, "--max-rounds", "3", "--quiet",
                     "--resume", "logs/task_checkpoint.json")
    assert resumed.returncode == 0, resumed.stderr
    assert [r.round for r in fake.chats] == [1, 1, 2, 2, 3, 3]


def test_a_second_signal_while_a_round_is_being_counted_leaves_stats_and_checkpoint_in_step(fake_llm, workdir):
    from azclaw import Orchestrator
    from azclaw.state import RunState

    class InterruptedWhileCounting(RunState):
        def _fold(self, round_no):
            super()._fold(round_no)
            if round_no == 2:  # Ctrl+C twice, the second one while round 2 is folded in
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)

    fake = fake_llm(responder=lambda request: text(f"note of round {request.round}"))
    orch = Orchestrator(team(fake.url, "alice", "bob"), verbose=False)
    orch.state = InterruptedWhileCounting(stats=orch.stats)  # the run state is the orchestrator's collaborator
    orch.set_task("x")
    with pytest.raises(KeyboardInterrupt):
        orch.run(max_rounds=5)
    checkpoint = read_json(orch.checkpoint_path)
    turns = {name: a["turns"] for name, a in checkpoint["stats"]["agents"].items()}
    assert checkpoint["round"] == checkpoint["stats"]["rounds"] == 2
    assert turns == {"alice": 2, "bob": 2}, "a resume would count the interrupted round twice"
    assert max(m["round"] for m in checkpoint["history"]) == 2
