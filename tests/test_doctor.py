"""``azclaw doctor`` against scripted servers that imitate llama.cpp, Ollama,
vLLM and plain OpenAI-compatible ones; through the library and the command."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

import json
import threading

from azclaw import Agent
from azclaw.tools.confine import SandboxLevel, probe_sandbox
from azclaw.tools.confine.outfolder import SANDBOX_UID
from azclaw.doctor import FAIL, OK, WARN, check_folder, check_reachable, check_sandbox, diagnose, prompt_size
from fakellm import Reply, call, text
from helpers import assert_one_error_line, orchestrator

REMEMBER = call("remember", {"text": "azclaw doctor was here", "title": "doctor"})
LINE = re.compile(r"^(OK  |WARN|FAIL) [a-z ]+: ")
HAS_LOCAL = importlib.util.find_spec("llama_cpp") is not None


def checks(diagnosis, name):
    return [c for c in diagnosis.checks if c.name == name]


def only(diagnosis, name):
    found = checks(diagnosis, name)
    assert len(found) == 1, diagnosis.lines()
    return found[0]


def team(url, *names, **kw):
    return [Agent(n, endpoint=url, can_write=n == "developer", **kw) for n in names or ("architect",)]


# -- tool calls -------------------------------------------------------------------

def test_structured_tool_calls_are_ok(fake_llm):
    fake = fake_llm(script=[REMEMBER])
    diagnosis = diagnose(team(fake.url))
    check = only(diagnosis, "tool calls")
    assert check.status == OK and "structured tool_calls (remember)" in check.detail
    assert diagnosis.exit_code == 0


def test_the_tool_probe_is_one_real_request_offering_remember(fake_llm):
    fake = fake_llm(script=[REMEMBER], models=[{"id": "qwen"}])
    diagnose(team(fake.url, model="qwen"))
    [request] = fake.chats  # it worked in the agents' mode: no other mode is tried
    assert request.tool_names == ["remember"]
    assert request.body["tool_choice"] == "auto" and request.body["model"] == "qwen"
    assert "remember" in request.user


def test_tool_calls_written_as_text_are_ok_because_azclaw_parses_them(fake_llm):
    fake = fake_llm(script=[REMEMBER], text_calls=True)
    check = only(diagnose(team(fake.url)), "tool calls")
    assert check.status == OK and "as text" in check.detail and "(remember)" in check.detail


def test_no_tool_call_is_a_warning_with_a_fix(fake_llm):
    fake = fake_llm(script=[text("I would rather not.")])
    diagnosis = diagnose(team(fake.url))
    check = only(diagnosis, "tool calls")
    assert check.status == WARN and "no tool call" in check.detail and "I would rather not." in check.detail
    assert check.fix and "fix:" in check.line()
    assert diagnosis.exit_code == 0


def test_a_failing_chat_request_fails_the_tool_check(fake_llm):
    from fakellm import error
    fake = fake_llm(script=[error(500)])
    check = only(diagnose(team(fake.url)), "tool calls")
    assert check.status == FAIL and "HTTP 500" in check.detail and check.fix


def constrained_call(request):
    """A small model: asked freely it answers in prose; held to a schema it calls the tool."""
    if "response_format" in request.body:
        return text(json.dumps({"tool": "remember", "arguments": {"text": "azclaw doctor was here",
                                                                  "title": "doctor"}}))
    return text("Sure, I will remember that.")


def test_tool_calls_are_judged_in_the_mode_the_agents_use_with_one_line(fake_llm):
    fake = fake_llm(responder=constrained_call)
    diagnosis = diagnose(team(fake.url, tool_mode="constrained"))  # what --local runs
    [check] = checks(diagnosis, "tool calls")
    assert check.status == OK and check.detail.endswith("tool mode constrained: a valid call (remember)")
    assert len(fake.chats) == 1 and "response_format" in fake.chats[0].body
    assert not any("cannot remember" in line or "tool mode" in line.split(":")[0] for line in diagnosis.lines())


def test_a_mode_that_gives_no_call_warns_and_names_the_mode_that_works(fake_llm):
    fake = fake_llm(responder=constrained_call)
    [check] = checks(diagnose(team(fake.url)), "tool calls")  # auto starts native and stays there on prose
    assert check.status == WARN and "with --tool-mode auto agents will not call tools" in check.detail
    assert "native: no tool call (it wrote: 'Sure, I will remember that.')" in check.detail
    assert "constrained: a valid call (remember)" in check.detail
    assert check.fix.startswith("pass --tool-mode constrained")
    assert "cannot remember" not in check.detail


def test_auto_is_ok_where_a_malformed_native_call_switches_it_to_constrained(fake_llm):
    def respond(request):
        if "response_format" in request.body:
            return constrained_call(request)
        return call("remember", '{"text": "cut')  # arguments that do not parse
    fake = fake_llm(responder=respond)
    [check] = checks(diagnose(team(fake.url)), "tool calls")
    assert check.status == OK and "tool mode constrained: a valid call (remember)" in check.detail
    assert "auto switches to it after native gave a malformed call" in check.detail
    assert len(fake.chats) == 2


# -- busy servers -------------------------------------------------------------------

def test_a_server_that_takes_the_connection_but_does_not_answer_in_time_is_busy(fake_llm):
    gate = threading.Event()
    fake = fake_llm(routes={"/v1/models": lambda request: gate.wait(60) and (200, {"data": []})})
    try:
        check, _ = check_reachable(fake.url, None, timeout=1.0)  # the route holds the reply until the gate opens
    finally:
        gate.set()
    assert check.status == WARN and f"{fake.url} is busy" in check.detail
    assert "answers /health (HTTP 200) but not /v1/models within 1 s" in check.detail
    assert "nothing answers" not in check.detail and "idle" in check.fix


def test_a_server_with_no_free_slot_is_busy_and_its_other_checks_wait(fake_llm):
    fake = fake_llm(routes={"/health": (503, {"status": "no slot available", "slots_idle": 0,
                                               "slots_processing": 1})})
    diagnosis = diagnose(team(fake.url))
    reachable = only(diagnosis, "reachable")
    assert reachable.status == WARN and "is busy: HTTP 503 (no slot available)" in reachable.detail
    assert not checks(diagnosis, "tool calls") and not fake.chats
    assert diagnosis.exit_code == 0


def test_a_server_loading_its_model_says_so(fake_llm):
    loading = (503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
    fake = fake_llm(routes={"/health": loading, "/v1/models": loading})
    reachable = only(diagnose(team(fake.url)), "reachable")
    assert reachable.status == WARN and "is loading its model (HTTP 503: Loading model)" in reachable.detail


def test_a_chat_request_that_queues_past_the_timeout_is_busy_not_a_failure(fake_llm):
    gate = threading.Event()
    fake = fake_llm(script=[Reply(text="late", gate=gate)])
    try:
        diagnosis = diagnose(team(fake.url), timeout=1.0)  # the reply waits for the gate: it never comes in time
    finally:
        gate.set()
    check = only(diagnosis, "tool calls")
    assert check.status == WARN and "did not answer a chat request within 1 s: busy" in check.detail
    assert len(fake.chats) == 1 and diagnosis.exit_code == 0


def test_command_against_a_busy_server_says_busy_not_that_nothing_answers(fake_llm, azclaw):
    gate = threading.Event()
    fake = fake_llm(routes={"/v1/models": lambda request: gate.wait(60) and (200, {"data": []})})
    try:
        proc = azclaw("doctor", "--endpoint", fake.url)  # /v1/models is held: doctor gives up after 10 s
    finally:
        gate.set()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [line] = [ln for ln in proc.stdout.splitlines() if " reachable: " in ln]
    assert line.startswith(f"WARN reachable: {fake.url} is busy: ") and "-- fix: " in line
    assert "nothing answers" not in proc.stdout and "start the server" not in proc.stdout


# -- servers and context ----------------------------------------------------------

def props(n_ctx):
    return {"/props": {"default_generation_settings": {"n_ctx": n_ctx}, "model_path": "/m/qwen2.5-7b.gguf"}}


def test_llama_cpp_props_with_a_small_context_fails(fake_llm):
    fake = fake_llm(script=[REMEMBER], routes=props(1024), models=[{"id": "qwen", "owned_by": "llamacpp"}])
    diagnosis = diagnose(team(fake.url, "architect", "developer", "reviewer"))
    assert "llama.cpp" in only(diagnosis, "server").detail and "qwen2.5-7b.gguf" in only(diagnosis, "server").detail
    context = only(diagnosis, "context")
    assert context.status == FAIL and "1024 tokens (/props n_ctx)" in context.detail
    assert "-c " in context.fix
    assert diagnosis.exit_code == 1


def test_a_context_that_fits_the_start_of_a_turn_but_not_its_tool_steps_warns(fake_llm):
    fake = fake_llm(script=[REMEMBER], routes=props(8192))
    agents = team(fake.url, "architect", "developer", "reviewer", max_tokens=512)
    size = prompt_size(agents)
    assert size.first < 8192 < size.peak
    context = only(diagnose(agents), "context")
    assert context.status == WARN and f"~{size.peak}" in context.detail


def test_a_large_context_is_ok(fake_llm):
    fake = fake_llm(script=[REMEMBER], routes=props(32768))
    assert only(diagnose(team(fake.url)), "context").status == OK


def test_ollama_with_its_default_context_warns_and_says_how_to_raise_it(fake_llm):
    fake = fake_llm(script=[REMEMBER], models=[{"id": "qwen3:8b", "owned_by": "library"}],
                    routes={"/api/version": {"version": "0.6.2"}, "/api/show": {"parameters": "temperature 0.7"}})
    diagnosis = diagnose(team(fake.url, model="qwen3:8b"))
    assert only(diagnosis, "server").detail.startswith("Ollama 0.6.2")
    context = only(diagnosis, "context")
    assert context.status == WARN and "silently" in context.detail
    assert "OLLAMA_CONTEXT_LENGTH" in context.fix and "num_ctx" in context.fix
    shows = [r for r in fake.requests if r.path == "/api/show"]
    assert shows and shows[0].body == {"model": "qwen3:8b"}


def test_ollama_num_ctx_from_api_show_is_compared(fake_llm):
    fake = fake_llm(script=[REMEMBER], models=[{"id": "qwen3:8b", "owned_by": "library"}],
                    routes={"/api/version": {"version": "0.9.0"}, "/api/show": {"parameters": "num_ctx 32768"}})
    context = only(diagnose(team(fake.url, model="qwen3:8b")), "context")
    assert context.status == OK and "32768 tokens (/api/show num_ctx)" in context.detail


def test_vllm_reports_max_model_len_and_the_model_default_is_its_one_model(fake_llm):
    fake = fake_llm(script=[REMEMBER], models=[{"id": "Qwen/Qwen3-8B", "owned_by": "vllm", "max_model_len": 40960}])
    diagnosis = diagnose(team(fake.url))
    server = only(diagnosis, "server")
    assert server.status == OK and server.detail.startswith("vLLM at ") and "Qwen/Qwen3-8B" in server.detail
    assert "40960 tokens (/v1/models max_model_len)" in only(diagnosis, "context").detail


def test_a_model_the_server_does_not_serve_fails_as_the_run_would(fake_llm):
    fake = fake_llm(script=[REMEMBER], models=[{"id": "Qwen/Qwen3-8B", "owned_by": "vllm"},
                                               {"id": "Qwen/Qwen3-14B", "owned_by": "vllm"}])
    diagnosis = diagnose(team(fake.url, model="qwen3"))
    server = only(diagnosis, "server")
    assert server.status == FAIL and "does not serve model 'qwen3'" in server.detail and "before round 1" in server.detail
    assert "Qwen/Qwen3-8B, Qwen/Qwen3-14B" in server.detail and server.fix == "pass --model Qwen/Qwen3-8B"
    assert diagnosis.exit_code == 1


@pytest.mark.parametrize("models, model", [([{"id": "qwen.gguf", "owned_by": "llamacpp"}], "anything"),
                                           ([{"id": "local", "owned_by": "me"}], "anything"),
                                           ([{"id": "qwen3:latest", "owned_by": "library"}], "qwen3"),
                                           ([{"id": "one"}], "default"), ([], "anything")])
def test_servers_that_take_the_model_name_pass_the_server_check(fake_llm, models, model):
    fake = fake_llm(script=[REMEMBER], models=models)
    assert only(diagnose(team(fake.url, model=model)), "server").status == OK


def test_each_endpoint_is_checked_once(fake_llm):
    one, two = fake_llm(script=[REMEMBER]), fake_llm(script=[REMEMBER])
    agents = [Agent("a", endpoint=one.url), Agent("b", endpoint=one.url), Agent("c", endpoint=[two.url, one.url])]
    diagnosis = diagnose(agents)
    assert len(checks(diagnosis, "tool calls")) == 2
    assert len(one.chats) == len(two.chats) == 1  # the tool probe, once per endpoint


# one context prober: doctor reports what a run fits its agents to
FLAVOURS = {
    "llama.cpp": dict(routes={"/props": {"default_generation_settings": {"n_ctx": 3072}}}),
    "llama.cpp, newer": dict(routes={"/props": {"n_ctx": 3072}}),
    "vLLM": dict(models=[{"id": "Qwen/Qwen3-8B", "owned_by": "vllm", "max_model_len": 3072}]),
    "OpenRouter": dict(models=[{"id": "qwen/qwen3-8b", "context_length": 3072}]),
    "LM Studio": dict(models=[{"id": "qwen2.5-7b-instruct", "owned_by": "organization_owner"}],
                      routes={"/api/v0/models": {"data": [
                          {"id": "qwen2.5-7b-instruct", "state": "loaded", "max_context_length": 32768,
                           "loaded_context_length": 3072},
                          {"id": "llama-3.2-3b-instruct", "state": "not-loaded", "max_context_length": 131072}]}}),
    "Ollama num_ctx": dict(models=[{"id": "qwen3:8b", "owned_by": "library"}],
                           routes={"/api/version": {"version": "0.9.0"},
                                   "/api/show": {"parameters": "num_ctx                        3072",
                                                 "model_info": {"qwen3.context_length": 40960}}}),
    "Ollama loaded": dict(models=[{"id": "qwen3:8b", "owned_by": "library"}],
                          routes={"/api/version": {"version": "0.9.0"}, "/api/show": {"parameters": ""},
                                  "/api/ps": {"models": [{"name": "qwen3:8b", "model": "qwen3:8b",
                                                          "context_length": 3072}]}}),
}
SOURCES = {"llama.cpp": "/props n_ctx", "llama.cpp, newer": "/props n_ctx", "vLLM": "/v1/models max_model_len",
           "OpenRouter": "/v1/models context_length", "LM Studio": "/api/v0/models loaded_context_length",
           "Ollama num_ctx": "/api/show num_ctx", "Ollama loaded": "/api/ps context_length"}


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_doctor_and_a_run_find_the_same_context_size(fake_llm, workdir, flavour):
    fake = fake_llm(**FLAVOURS[flavour])
    context = only(diagnose(team(fake.url, max_tokens=200)), "context")
    assert f"has 3072 tokens ({SOURCES[flavour]})" in context.detail, context.detail
    agents = team(fake.url, "architect", max_tokens=200)
    orch = orchestrator(agents, output_dir=workdir / "output", log_dir=workdir / "logs",
                        agents_dir=workdir / "agents")
    orch.set_task("Plan a todo app.")
    orch.run(max_rounds=1)
    session = orch.sessions["architect"]
    assert session.client.context_size() == 3072
    assert session.context_budget == 3072 - 200  # the run fitted its requests to that context


# -- nothing listening, folders ---------------------------------------------------

def test_nothing_listening_fails_naming_the_url(dead_url):
    diagnosis = diagnose(team(dead_url))
    reachable = only(diagnosis, "reachable")
    assert reachable.status == FAIL and dead_url in reachable.detail and reachable.fix
    assert not checks(diagnosis, "tool calls")
    assert diagnosis.exit_code == 1


def test_folder_checks(workdir):
    (workdir / "afile").write_text("x")
    assert check_folder("output", workdir / "new" / "deeper").status == OK
    assert check_folder("output", workdir).detail.endswith("writable")
    blocked = check_folder("output", workdir / "afile" / "out")
    assert blocked.status == FAIL and "is a file" in blocked.detail


def test_the_python_sandbox_check_states_the_level_the_self_test_found(workdir):
    level = probe_sandbox()
    [check] = check_sandbox(workdir / "output", workdir / "logs", workdir / "agents")
    assert check.name == "python sandbox"
    if level.confined:
        assert check.status == OK and check.detail == level.text and "landlock ABI" in check.detail
    else:
        assert check.status == WARN and "--unsandboxed-python" in check.fix


def test_the_python_sandbox_check_names_the_quota_no_setuid_files_and_the_uid(workdir):
    level = probe_sandbox()
    if not level.confined:
        pytest.skip("no operating-system sandbox here")
    [check] = check_sandbox(workdir / "output", workdir / "logs", workdir / "agents")
    assert "no setuid files" in check.detail
    if level.quota:
        assert "write quota 200 MB/5000 files" in check.detail
    else:
        assert check.status == WARN and "no write quota per call" in check.detail
    if os.geteuid() == 0 and level.uid != 0:
        assert f"runs as uid {SANDBOX_UID}" in check.detail
    elif os.geteuid() == 0:
        assert check.status == WARN and "runs as root without capabilities" in check.detail


@pytest.mark.parametrize("gaps, words", [
    ({"quota": False}, "no write quota per call"),
    ({"uid": 0}, "runs as root"),
], ids=["no-quota", "root"])
def test_a_confined_sandbox_without_the_quota_or_as_root_is_a_warning(gaps, words, monkeypatch):
    from azclaw.doctor import sandbox_gaps
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    level = SandboxLevel(landlock=7, seccomp=True, quota=True, setuid_refused=True, uid=SANDBOX_UID)
    assert sandbox_gaps(level) == []
    found = sandbox_gaps(SandboxLevel(**{"landlock": 7, "seccomp": True, "quota": True, "uid": SANDBOX_UID, **gaps}))
    assert len(found) == 1 and words in found[0]


@pytest.mark.parametrize("output, agents, logs", [(".", "agents", "logs"), ("out", "out/agents", "logs"),
                                                  ("logs", "agents", "logs"), ("agents/x", "agents", "logs")])
def test_an_output_folder_that_overlaps_memories_or_logs_fails(workdir, output, agents, logs):
    checks = check_sandbox(workdir / output, workdir / logs, workdir / agents)
    assert checks[0].status == FAIL and checks[0].name == "output apart" and "overlaps" in checks[0].detail


# -- the command ------------------------------------------------------------------

def test_command_prints_one_line_per_check_and_exits_0(fake_llm, azclaw):
    fake = fake_llm(script=[REMEMBER], routes=props(32768))
    proc = azclaw("doctor", "--endpoint", fake.base)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert all(LINE.match(line) for line in lines[:-1]), lines
    assert lines[-1].startswith("azclaw doctor: ") and "0 FAIL" in lines[-1]
    names = [line[5:].split(":")[0] for line in lines[:-1]]
    assert names == ["reachable", "server", "tool calls", "context", "agents folder", "output folder",
                     "log folder", "python sandbox", "agentazall"]


def test_command_against_a_server_that_writes_tool_calls_as_text(fake_llm, azclaw):
    fake = fake_llm(script=[REMEMBER], text_calls=True)
    proc = azclaw("doctor", "--endpoint", fake.url, "--task", "Build a todo app")
    assert proc.returncode == 0
    assert "OK   tool calls:" in proc.stdout and "as text, and azclaw parses them" in proc.stdout


def test_command_fails_with_exit_1_where_nothing_listens(dead_url, azclaw):
    proc = azclaw("doctor", "--endpoint", dead_url)
    assert proc.returncode == 1
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL")]
    assert line.startswith("FAIL reachable: nothing answers at " + dead_url) and "fix:" in line
    assert "Traceback" not in proc.stderr


@pytest.fixture
def web_page_url():
    """A loopback server that answers every request with an HTML page, as a
    web server or a proxy's login page on the wrong port would."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><body><h1>Welcome to nginx!</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    server.shutdown()
    server.server_close()


def test_command_fails_on_a_web_page_instead_of_a_model_server(web_page_url, azclaw):
    proc = azclaw("doctor", "--endpoint", web_page_url)
    assert proc.returncode == 1, proc.stdout
    [reachable] = [ln for ln in proc.stdout.splitlines() if " reachable: " in ln]
    assert reachable.startswith("FAIL") and "text/html" in reachable and "Welcome to nginx" in reachable
    assert "-- fix: " in reachable
    assert " server: " not in proc.stdout  # it is not called an OpenAI-compatible server


def test_command_checks_every_endpoint_of_an_agents_spec(fake_llm, dead_url, azclaw):
    fake = fake_llm(script=[REMEMBER])
    proc = azclaw("doctor", "--agents", f"designer:{fake.url},coder:{dead_url}")
    assert proc.returncode == 1
    assert fake.base.split("//")[1] in proc.stdout and dead_url in proc.stdout
    assert len(fake.chats) == 1  # the tool probe, to the live endpoint only


def test_command_every_non_ok_line_has_a_fix(fake_llm, azclaw, workdir):
    (workdir / "afile").write_text("x")
    fake = fake_llm(script=[text("no")], routes=props(1024))
    proc = azclaw("doctor", "--endpoint", fake.url, "--output", "afile/out")
    assert proc.returncode == 1
    bad = [ln for ln in proc.stdout.splitlines() if ln.startswith(("WARN", "FAIL"))]
    assert len(bad) >= 3 and all(" -- fix: " in ln for ln in bad), bad


def test_local_and_endpoint_together_is_one_error_line(azclaw):
    proc = azclaw("doctor", "--local", "--endpoint", "http://127.0.0.1:9")
    assert_one_error_line(proc, "--local", "--endpoint")


@pytest.mark.skipif(HAS_LOCAL, reason="llama_cpp is installed: the local extra is present")
def test_local_without_the_extra_fails_with_the_install_line(azclaw):
    proc = azclaw("doctor", "--local")
    assert proc.returncode == 1
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL")]
    assert line.startswith("FAIL local server: --local needs llama-cpp-python")
    assert "pip install 'azclaw[local]'" in line and "GGML_NATIVE=OFF" in line
    run = azclaw("run", "--local", "--task", "x")
    assert_one_error_line(run, "pip install 'azclaw[local]'")


def test_command_checks_every_server_of_a_pool_once(fake_llm, dead_url, azclaw):
    up = fake_llm(script=[REMEMBER], routes=props(32768))
    proc = azclaw("doctor", "--endpoints", f"{up.url},{dead_url}", "--agents", "a,b,c")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one server of the pool does not answer
    reachable = [ln for ln in proc.stdout.splitlines() if " reachable: " in ln]
    assert len(reachable) == 2 and reachable[0].startswith("OK ") and up.url in reachable[0]
    assert reachable[1].startswith("FAIL reachable: nothing answers at " + dead_url)
