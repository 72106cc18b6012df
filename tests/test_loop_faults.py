"""Runs that survive bad servers, bad models and kills, shown
through the real HTTP path."""

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from azclaw import Agent, Orchestrator, RunAborted
from azclaw.checkpoint import Checkpoint
from azclaw.state import RunState
from azclaw.errors import CheckpointError
from azclaw.memory import parse_entries
from azclaw.files import sweep_temporary
from azclaw.stats import RunStats
from helpers import CLI_TIMEOUT, fast_clients, run_file, wait_for
from fakellm import FakeLLM, Reply, call, calls, error, text


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def team(url, writer=True, **settings):
    return [Agent("architect", endpoint=url, **settings), Agent("developer", endpoint=url, can_write=writer, **settings)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def all_request_text(fake) -> str:
    return "\n".join(json.dumps(r.body) for r in fake.chats)


def test_a_server_that_fails_every_few_requests_loses_no_round():
    count = {"n": 0}

    def flaky(request):
        count["n"] += 1
        if count["n"] % 3 == 0:
            return error(503)
        if count["n"] % 5 == 0:
            return error(429, headers={"Retry-After": "0"})
        return text(f"reply {count['n']}")

    with FakeLLM(responder=flaky) as fake:
        orch = Orchestrator(team(fake.url), verbose=False, client_factory=fast_clients)
        stats = orch.run(max_rounds=6)
    assert stats.rounds == 6 and stats.errors == 0
    assert [m.round for m in orch.history].count(6) == 2
    assert any(r.body for r in fake.chats) and count["n"] > 12


def test_a_turn_that_keeps_failing_is_an_error_and_the_run_goes_on():
    def responder(request):
        return error(500) if request.agent == "architect" else text("developer is fine")

    with FakeLLM(responder=responder) as fake:
        agents = team(fake.url)
        agents[0].retries = 1
        orch = Orchestrator(agents, verbose=False, client_factory=fast_clients)
        stats = orch.run(max_rounds=3)
    assert stats.rounds == 3
    assert stats.agents["architect"].errors == 3 and stats.agents["developer"].errors == 0
    journal = [json.loads(l) for l in run_file(Path("logs"), "_journal.jsonl").read_text().splitlines()]
    errors = [e["errors"] for e in journal if e["event"] == "turn" and e["agent"] == "architect"]
    assert len(errors) == 3 and all("HTTP 500" in e[0] for e in errors)


def test_rounds_in_which_every_turn_fails_abort_the_run_with_a_checkpoint():
    def responder(request):  # the server goes down in round 3
        return error(502) if request.round >= 3 else text("ok")

    with FakeLLM(responder=responder) as fake:
        agents = team(fake.url, retries=0)
        orch = Orchestrator(agents, verbose=False, max_failed_rounds=2, checkpoint_every=1, client_factory=fast_clients)
        with pytest.raises(RunAborted, match="2 rounds in which every turn failed"):
            orch.run(max_rounds=10)
    checkpoint = Checkpoint.load(run_file(Path("logs"), "_checkpoint.json"))
    assert checkpoint.round == 2  # round 3 failed twice: it is not done
    assert [m.round for m in checkpoint.history] == [1, 1, 2, 2]


def test_an_agent_fails_over_to_its_next_endpoint():
    dead = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    with FakeLLM(default="from the live server") as fake:
        agent = Agent("architect", endpoint=[dead, fake.url])
        orch = Orchestrator([agent], verbose=False, client_factory=fast_clients)
        stats = orch.run(max_rounds=2)
    assert stats.errors == 0 and len(fake.chats) == 2
    assert orch.history[-1].text == "from the live server"


def test_tool_calls_written_as_text_are_run_and_answered_as_text():
    block = '<tool_call>{"name": "remember", "arguments": {"text": "We chose SQLite", "title": "db"}}</tool_call>'
    with FakeLLM(per_agent={"architect": [text(block), text("Stored the decision.")]}) as fake:
        orch = Orchestrator([Agent("architect", endpoint=fake.url)], verbose=False)
        orch.run(max_rounds=1)
    follow_up = fake.chats_of("architect")[1].messages
    assert follow_up[-1]["role"] == "user" and follow_up[-1]["content"].startswith("Result of remember")
    assert all(m["role"] != "tool" for m in follow_up)
    [entry] = parse_entries(list(Path("agents/architect").rglob("db.txt"))[0].read_text())
    assert (entry.text, entry.agent, entry.round) == ("We chose SQLite", "architect", 1)
    assert orch.history[0].text == "Stored the decision."


@pytest.mark.parametrize("reply, expected", [
    (call("remember", '{"text": "unterminated'), "not valid JSON"),
    (call("remember", {"title": "no text"}), "missing required argument(s) 'text'"),
    (call("read_file", {"path": "x", "max_lines": "many"}), "'max_lines' must be integer"),
    (call("read_file", {"path": "x", "colour": "red"}), "unknown argument(s) 'colour'"),
    (call("launch_rockets", {}), "unknown tool 'launch_rockets'; available tools: recall, remember"),
    (call("write_file", {"path": "x.py", "content": "x"}), "not available to architect"),
])
def test_model_mistakes_come_back_as_error_results_and_the_round_goes_on(reply, expected):
    with FakeLLM(per_agent={"architect": [reply, text("carrying on")]}) as fake:
        orch = Orchestrator([Agent("architect", endpoint=fake.url)], verbose=False)
        stats = orch.run(max_rounds=2)
    result = fake.chats_of("architect")[1].messages[-1]
    # a malformed call is never replayed as tool_calls: its error comes as a user message
    assert result["role"] == ("user" if expected == "not valid JSON" else "tool")
    assert "ERROR:" in result["content"] and expected in result["content"]
    assert stats.rounds == 2 and stats.errors == 0 and stats.agents["architect"].tool_errors == 1
    assert not Path("output/x.py").exists()


def test_a_tool_that_raises_is_an_error_result():
    from azclaw import build_default_registry
    registry = build_default_registry()

    @registry.tool("explode", "always fails", {})
    def explode(_ctx=None):
        raise RuntimeError("boom")

    with FakeLLM(per_agent={"architect": [call("explode"), text("ok")]}) as fake:
        Orchestrator([Agent("architect", endpoint=fake.url)], registry=registry, verbose=False).run(max_rounds=1)
    assert "tool 'explode' failed: RuntimeError: boom" in fake.chats[1].messages[-1]["content"]


def test_empty_and_cut_off_replies_are_asked_again_once_and_counted_not_crashed_on():
    with FakeLLM(per_agent={"architect": [text(""), text(""), text("half a sent", finish_reason="length"),
                                          Reply(text="no usage", usage=False)]}) as fake:
        orch = Orchestrator([Agent("architect", endpoint=fake.url)], verbose=False)
        stats = orch.run(max_rounds=3)
    a = stats.agents["architect"]
    assert (a.empty, a.truncated, stats.rounds) == (1, 1, 3)  # round 1: empty twice (the reply and its retry)
    assert "Your reply was empty" in fake.chats[1].messages[-1]["content"]
    assert "no messages came from the previous round" in fake.chats[2].messages[1]["content"]


def test_planted_secrets_and_escapes_never_reach_the_model(tmp_path):
    src = tmp_path / "src"
    (src / ".ssh").mkdir(parents=True)
    (src / "app.py").write_text("print('public')")
    (src / ".env").write_text("PLANTED-ENV-SECRET")
    (src / ".ssh" / "id_rsa").write_text("PLANTED-SSH-KEY")
    (src / "deploy.key").write_text("PLANTED-KEY-FILE")
    (tmp_path / "outside.txt").write_text("PLANTED-OUTSIDE")
    (src / "innocent.txt").symlink_to(tmp_path / "outside.txt")
    (src / "alias.txt").symlink_to(src / ".env")
    attempts = [".env", ".ssh/id_rsa", "deploy.key", "../outside.txt", str(tmp_path / "outside.txt"),
                "innocent.txt", "alias.txt", "app.py"]
    script = calls(*[("read_file", {"path": p}) for p in attempts], ("list_files", {"directory": ""}))
    with FakeLLM(per_agent={"reviewer": [script, text("done")]}) as fake:
        # a source folder holding .ssh is refused unless allowed; allowed, its secrets stay out of reach
        Orchestrator([Agent("reviewer", endpoint=fake.url)], source_dirs=[src], verbose=False,
                     allow_secret_sources=True).run(max_rounds=1)
    sent = all_request_text(fake)
    assert "PLANTED" not in sent
    results = [m["content"] for m in fake.chats[1].messages if m["role"] == "tool"]
    assert all(r.startswith("ERROR") for r in results[:7]) and results[7] == "print('public')"
    assert "app.py" in results[8] and ".env" not in results[8] and "deploy.key" not in results[8]


def test_writes_are_limited_in_size_and_kept_inside_the_output(tmp_path):
    big = "x" * 1_000_001
    script = calls(("write_file", {"path": "../escape.py", "content": "x"}),
                   ("write_file", {"path": "big.txt", "content": big}),
                   ("write_file", {"path": ".env", "content": "X=1"}),
                   ("write_file", {"path": "pkg/ok.py", "content": "ok = 1"}),
                   pieces=65536)  # streamed in large pieces: 4 characters a piece made this megabyte take 20 s
    with FakeLLM(per_agent={"developer": [script, text("done")]}) as fake:
        Orchestrator([Agent("developer", endpoint=fake.url, can_write=True)], verbose=False).run(max_rounds=1)
    results = [m["content"] for m in fake.chats[1].messages if m["role"] == "tool"]
    assert [r.startswith("ERROR") for r in results] == [True, True, True, False]
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "output" / "big.txt").exists()
    assert (tmp_path / "output" / "pkg" / "ok.py").read_text() == "ok = 1"


def test_run_python_can_be_turned_off():
    with FakeLLM(per_agent={"developer": [call("run_python", {"code": "print(1)"}), text("ok")]}) as fake:
        Orchestrator([Agent("developer", endpoint=fake.url, can_write=True)], run_python=False,
                     verbose=False).run(max_rounds=1)
    assert "run_python is turned off" in fake.chats[1].messages[-1]["content"]


# -- checkpoints ------------------------------------------------------------

_WRITER = """
import sys
from azclaw.checkpoint import Checkpoint
from azclaw.state import RunState
from azclaw.context import Message
from azclaw.stats import RunStats
n = int(sys.argv[2])
while True:
    n += 1
    history = [Message(n, "a", "x" * 2000) for _ in range(100)]
    Checkpoint("t", "T", 10**6, RunState(n, RunStats(rounds=n), history)).save(sys.argv[1])
"""


@pytest.mark.slow  # twelve writer processes, each killed once it is writing
def test_a_kill_during_checkpoint_writes_always_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "logs" / "t_checkpoint.json"

    def written_since(start: int) -> bool:
        try:
            return Checkpoint.load(path).round > start
        except CheckpointError:  # none yet; a half-written one would fail the test below instead
            assert not path.exists(), "a reader met a half-written checkpoint"
            return False
    for attempt in range(12):
        start = attempt * 1_000_000  # this writer's rounds: above every earlier writer's
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(start)])
        # the event: this writer is writing checkpoint after checkpoint; however slow the machine,
        # the kill below then lands somewhere in its loop (often in the middle of a write)
        wait_for(lambda: written_since(start), what=f"writer {attempt}'s first checkpoint")
        time.sleep(0.007 * attempt)  # not a wait: spreads the kills over the writer's loop
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert Checkpoint.load(path).round > start, "a kill left no whole checkpoint"
    # killed writers may leave their temporary files; the next run's start sweeps them, and then
    # nothing but the checkpoint is left
    sweep_temporary(path.parent, [path.name])
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_run_sweeps_temporary_files_that_killed_writers_left_and_writes_readable_files(workdir):
    logs = workdir / "logs"
    logs.mkdir()
    stray = [logs / ".task_checkpoint.json.k1lled_1.tmp", logs / ".task_journal.jsonl.abcdefgh.tmp"]
    other = logs / ".other_checkpoint.json.abcdefgh.tmp"  # another topic's writer may be alive
    for f in stray + [other]:
        f.write_text("half")
    with FakeLLM(script=[call("write_file", {"path": "a.py", "content": "x = 1"}), text("done")]) as fake:
        Orchestrator([Agent("developer", endpoint=fake.url, can_write=True)], verbose=False).run(max_rounds=1)
    assert not any(f.exists() for f in stray) and other.exists()
    mask = os.umask(0)
    os.umask(mask)
    for f in (run_file(logs, "_checkpoint.json"), workdir / "output" / "a.py"):
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f  # the umask decides, not mkstemp's 0600


@pytest.mark.parametrize("content, message", [
    ('{"format": "azclaw-checkpoint", "version": 1, "round": 3', "truncated or not JSON"),
    ('{"format": "azclaw-checkpoint", "version": 99}', "version 99 is newer"),
    ('{"something": "else"}', "not an azclaw checkpoint"),
    ('{"format": "azclaw-checkpoint", "version": 1, "topic": {"name": "task"}}', "damaged checkpoint"),
])
def test_bad_checkpoints_are_refused_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.load(path)


def test_resuming_with_another_topics_checkpoint_is_refused(tmp_path):
    Checkpoint("other", "Other topic", 10, RunState(5, RunStats(rounds=5))).save(tmp_path / "c.json")
    with FakeLLM() as fake:
        orch = Orchestrator([Agent("architect", endpoint=fake.url)], verbose=False)
        orch.set_task("Build it")
        with pytest.raises(CheckpointError, match="belongs to topic 'other'"):
            orch.run(max_rounds=10, resume=tmp_path / "c.json")
        assert fake.chats == []


# -- the real command ---------------------------------------------------------

def azclaw(*args, **kw):
    return subprocess.run([sys.executable, "-m", "azclaw", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, **kw)


def test_a_truncated_checkpoint_is_one_line_error_from_the_cli(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "task_checkpoint.json").write_text('{"format": "azclaw-check')
    with FakeLLM() as fake:
        proc = azclaw("run", "--task", "x", "--name", "task", "--endpoint", fake.url, "--resume")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"azclaw: error: {Path('logs/task_checkpoint.json')}: checkpoint is truncated or not JSON (line 1 column")


def test_a_second_interrupt_stops_at_once_and_keeps_the_last_completed_round(tmp_path):
    with FakeLLM(delay=0.3) as fake, open(tmp_path / "err.txt", "w") as err_file:
        proc = subprocess.Popen([sys.executable, "-m", "azclaw", "run", "--task", "slow", "--endpoint", fake.url,
                                 "--agents", "solo", "--max-rounds", "50"],
                                stdout=subprocess.DEVNULL, stderr=err_file, text=True)
        wait_for(lambda: len(fake.chats) >= 3 or proc.poll() is not None, what="round 3")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "Ctrl+C again" in (tmp_path / "err.txt").read_text() or proc.poll() is not None,
                 what="the first SIGINT to be taken")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=CLI_TIMEOUT)
    err = (tmp_path / "err.txt").read_text()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    checkpoint = Checkpoint.load(run_file(tmp_path / "logs", "_checkpoint.json"))
    assert checkpoint.round >= 2 and checkpoint.round < 50


def test_approve_without_a_terminal_refuses_to_start():
    with FakeLLM() as fake:
        proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--approve", stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "--approve needs a terminal" in proc.stderr and fake.chats == []


def _run_on_a_terminal(args, answers: list[str], timeout=CLI_TIMEOUT) -> tuple[int, str]:
    """Run azclaw with a pseudo-terminal as stdin/stdout; answer each approval question."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "azclaw", *args], stdin=secondary, stdout=secondary,
                            stderr=subprocess.PIPE)
    os.close(secondary)
    seen, pending = b"", list(answers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        while pending and seen.count(b"[a]lways:") > len(answers) - len(pending):
            os.write(main, pending.pop(0).encode() + b"\n")
    proc.wait(timeout=timeout)
    os.close(main)
    return proc.returncode, seen.decode(errors="replace")


def test_approval_gate_asks_and_honours_no_and_always(tmp_path):
    script = [call("write_file", {"path": "refused.py", "content": "x"}),
              call("write_file", {"path": "allowed.py", "content": "y"}),
              call("write_file", {"path": "unasked.py", "content": "z"}), text("done")]
    with FakeLLM(per_agent={"developer": script}) as fake:
        code, screen = _run_on_a_terminal(["run", "--task", "x", "--endpoint", fake.url, "--agents", "developer",
                                           "--max-rounds", "1", "--approve"], ["n", "a"])
        results = [m["content"] for m in fake.chats[-1].messages if m["role"] == "tool"]
    assert code == 0
    assert screen.count("approve write_file?") == 2
    assert "refused by the person" in results[0] and results[1].startswith("Wrote") and results[2].startswith("Wrote")
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == ["allowed.py", "unasked.py"]


def test_a_server_that_stops_answering_times_out_and_the_next_attempt_succeeds():
    replies = [Reply(text="too late", delay=8.0), Reply(drop=True), text("third time lucky")]
    with FakeLLM(script=replies) as fake:
        # 2 s: the third, prompt reply must fit in it on a busy machine too; the first takes 8
        agent = Agent("architect", endpoint=fake.url, timeout=2.0)
        orch = Orchestrator([agent], verbose=False, client_factory=fast_clients)
        stats = orch.run(max_rounds=1)
    assert stats.errors == 0 and orch.history[0].text == "third time lucky"
    assert len(fake.chats) == 3


def test_a_server_that_never_answers_fails_the_turn_with_the_url_in_the_error():
    with FakeLLM(script=[Reply(drop=True)] * 3) as fake:
        agent = Agent("architect", endpoint=fake.url, retries=2)
        orch = Orchestrator([agent], verbose=False, max_failed_rounds=5, client_factory=fast_clients)
        stats = orch.run(max_rounds=1)
    assert stats.errors == 1 and stats.rounds == 1
    journal = [json.loads(l) for l in run_file(Path("logs"), "_journal.jsonl").read_text().splitlines()]
    error = next(e for e in journal if e["event"] == "turn")["errors"][0]
    assert fake.url in error and "gave up after 3 attempts" in error


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_reading_a_named_pipe_is_an_error_result_not_a_hang(tmp_path):
    import threading
    (tmp_path / "output").mkdir()
    os.mkfifo(tmp_path / "output" / "pipe")
    with FakeLLM(per_agent={"reviewer": [call("read_file", {"path": "pipe"}), text("done")]}) as fake:
        orch = Orchestrator([Agent("reviewer", endpoint=fake.url)], verbose=False)
        runner = threading.Thread(target=orch.run, kwargs={"max_rounds": 1}, daemon=True)
        runner.start()
        runner.join(60)  # only a guard against hanging the suite
        if runner.is_alive():  # unblock the reader before failing
            os.close(os.open(tmp_path / "output" / "pipe", os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail("read_file blocked on a named pipe")
    assert fake.chats[1].messages[-1]["content"].startswith("ERROR: 'pipe' is not a regular file")


def test_list_files_does_not_show_links_that_lead_outside(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("x = 1\n")
    (tmp_path / "outside-secret-name.txt").write_text("x" * 12345)
    (src / "notes.txt").symlink_to(tmp_path / "outside-secret-name.txt")
    (src / "alias.py").symlink_to(src / "app.py")
    with FakeLLM(per_agent={"reviewer": [call("list_files", {"directory": ""}), text("done")]}) as fake:
        Orchestrator([Agent("reviewer", endpoint=fake.url)], source_dirs=[src], verbose=False).run(max_rounds=1)
    listing = fake.chats[1].messages[-1]["content"]
    assert "app.py (6 bytes)" in listing and "alias.py" in listing
    assert "notes.txt" not in listing and "12345" not in listing


def test_a_round_in_which_every_turn_failed_runs_again_with_the_messages_the_team_had():
    attempts = {"round 2": 0}

    def responder(request):  # the server is down for the first attempt at round 2
        if request.round == 2:
            attempts["round 2"] += 1
            if attempts["round 2"] == 1:
                return error(503)
        return text(f"PLAN-FROM-ROUND-{request.round}")

    with FakeLLM(responder=responder) as fake:
        agent = Agent("architect", endpoint=fake.url, retries=0)
        orch = Orchestrator([agent], verbose=False, client_factory=fast_clients)
        stats = orch.run(max_rounds=3)
    assert stats.agents["architect"].errors == 1 and stats.agents["architect"].turns == 3
    assert [r.round for r in fake.chats] == [1, 2, 2, 3]
    again = [r for r in fake.chats if r.round == 2][1].user
    assert again.startswith("Messages of round 1:") and "PLAN-FROM-ROUND-1" in again
    assert "PLAN-FROM-ROUND-2" in [r for r in fake.chats if r.round == 3][0].user


def test_a_run_that_crashes_still_writes_its_checkpoint_and_says_so_in_the_journal():
    class Broken(Exception):
        """A bug somewhere below the loop (not an EndpointError): the run must end as 'error'."""

    with FakeLLM(script=[text("round one"), text("round two")]) as fake:
        agent = Agent("architect", endpoint=fake.url)

        def breaking_client(agent, outages):  # a client factory is the seam for a broken backend
            client = fast_clients(agent, outages)
            chat = client.chat

            def chat_then_break(messages, *args, **kwargs):
                if "Current round: 2 of" in messages[0]["content"]:
                    raise Broken("a bug in azclaw")
                return chat(messages, *args, **kwargs)
            client.chat = chat_then_break
            return client

        orch = Orchestrator([agent], verbose=False, client_factory=breaking_client)
        with pytest.raises(Broken):
            orch.run(max_rounds=5)
    assert Checkpoint.load(run_file(Path("logs"), "_checkpoint.json")).round == 1
    end = [json.loads(l) for l in run_file(Path("logs"), "_journal.jsonl").read_text().splitlines()][-1]
    assert (end["event"], end["reason"], end["round"]) == ("run_end", "error", 1)
