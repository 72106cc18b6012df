"""``azclaw doctor`` against scripted servers that imitate llama.cpp, Ollama,
vLLM and plain OpenAI-compatible ones; through the library and the command."""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

from azclaw import Agent
from azclaw.tools.confine import SandboxLevel, probe_sandbox
from azclaw.tools.confine.outfolder import SANDBOX_UID
from azclaw.doctor import FAIL, OK, WARN, check_folder, check_sandbox, diagnose, prompt_size
from fakellm import call, text
from helpers import assert_one_error_line

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
    fake = fake_llm(script=[REMEMBER])
    diagnose(team(fake.url, model="qwen"))
    request = fake.chats[0]  # then one request per tool mode (native, text, constrained)
    assert len(fake.chats) == 4 and "response_format" in fake.chats[3].body
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


def test_vllm_reports_max_model_len_and_warns_about_an_unserved_model_name(fake_llm):
    fake = fake_llm(script=[REMEMBER], models=[{"id": "Qwen/Qwen3-8B", "owned_by": "vllm", "max_model_len": 40960}])
    diagnosis = diagnose(team(fake.url))
    server = only(diagnosis, "server")
    assert server.status == WARN and "vLLM" in server.detail and "--model Qwen/Qwen3-8B" in server.fix
    assert "40960 tokens" in only(diagnosis, "context").detail


def test_each_endpoint_is_checked_once(fake_llm):
    one, two = fake_llm(script=[REMEMBER]), fake_llm(script=[REMEMBER])
    agents = [Agent("a", endpoint=one.url), Agent("b", endpoint=one.url), Agent("c", endpoint=[two.url, one.url])]
    diagnosis = diagnose(agents)
    assert len(checks(diagnosis, "tool calls")) == 2
    assert len(one.chats) == len(two.chats) == 4  # the tool probe and the three tool modes, once per endpoint


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
    assert names == ["reachable", "server", "tool calls", "tool mode", "context", "agents folder", "output folder",
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
    assert len(fake.chats) == 4  # the tool probe and one request per tool mode, to the live endpoint only


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
