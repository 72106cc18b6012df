"""Points 11 and 12: the real ``azclaw`` command, its teams, and its one-line
errors for bad input."""

import json

import pytest

import azclaw as azclaw_pkg
from fakellm import Reply, call, text
from helpers import assert_one_error_line, cli_env, read_json, run_file

WRITER_TOOLS = {"write_file", "run_python"}


def offered(fake, agent):
    return set(fake.chats_of(agent)[0].tool_names)


def test_default_team_is_architect_developer_reviewer_and_only_developer_writes(fake_llm, azclaw):
    fake = fake_llm()
    proc = azclaw("run", "--task", "Build a todo CLI", "--endpoint", fake.url, "--max-rounds", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert [r.agent for r in fake.chats] == ["architect", "developer", "reviewer"]
    assert WRITER_TOOLS <= offered(fake, "developer")
    assert not WRITER_TOOLS & offered(fake, "architect")
    assert not WRITER_TOOLS & offered(fake, "reviewer")
    assert all("Build a todo CLI" in r.user for r in fake.chats)


def test_endpoint_from_AZCLAW_ENDPOINT(fake_llm, azclaw):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--max-rounds", "1", "--quiet", env=cli_env(AZCLAW_ENDPOINT=fake.base))
    assert proc.returncode == 0, proc.stderr
    assert len(fake.chats) == 3


def test_agents_spec_with_urls_makes_coder_the_writer(fake_llm, azclaw, workdir):
    designer_llm = fake_llm()
    coder_llm = fake_llm(per_agent={"coder": [call("write_file", {"path": "main.py", "content": "print(42)\n"}),
                                              text("wrote main.py")]})
    proc = azclaw("run", "--task", "Write main.py", "--agents",
                  f"designer:{designer_llm.url},coder:{coder_llm.url}", "--max-rounds", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert [r.agent for r in designer_llm.chats] == ["designer"], "each agent talks to its own URL"
    assert {r.agent for r in coder_llm.chats} == {"coder"}
    assert not WRITER_TOOLS & offered(designer_llm, "designer")
    assert WRITER_TOOLS <= offered(coder_llm, "coder")
    assert (workdir / "output" / "main.py").read_text() == "print(42)\n"
    assert read_json(run_file(workdir / "logs", "_checkpoint.json"))["written_files"] == ["main.py"]


@pytest.mark.parametrize("spec, writers", [
    ("alice/write:{url},coder/read:{url}", {"alice"}),
    ("dev:{url},reviewer:{url}", {"dev"}),
    ("developer,qa/write", {"developer", "qa"}),
    ("a/read,b/read", set()),
])
def test_agents_spec_markers_decide_who_writes(fake_llm, azclaw, spec, writers):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--agents", spec.format(url=fake.url),
                  "--max-rounds", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    agents = [r.agent for r in fake.chats]
    assert len(agents) == len(spec.split(","))
    assert {a for a in agents if WRITER_TOOLS <= offered(fake, a)} == writers
    assert all(not WRITER_TOOLS & offered(fake, a) for a in agents if a not in writers)


def test_version_prints_the_package_version(azclaw):
    proc = azclaw("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"azclaw {azclaw_pkg.__version__}"


def test_cli_options_reach_the_run(fake_llm, azclaw, workdir):
    (workdir / "docs").mkdir()
    (workdir / "docs" / "spec.txt").write_text("SPEC-CONTENT-11\n")
    fake = fake_llm(per_agent={"developer": [
        call("read_file", {"path": "spec.txt"}), call("write_file", {"path": "copy.txt", "content": "c"}),
        text("ok")]}, models=[{"id": "model-z"}])
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--max-rounds", "2", "--quiet",
                  "--source", "docs", "--output", "out-dir", "--log-dir", "my-logs", "--model", "model-z")
    assert proc.returncode == 0, proc.stderr
    assert {r.body["model"] for r in fake.chats} == {"model-z"}
    assert "SPEC-CONTENT-11" in fake.chats_of("developer")[1].tool_results[0]
    assert (workdir / "out-dir" / "copy.txt").read_text() == "c"
    assert read_json(run_file(workdir / "my-logs", "_checkpoint.json"))["round"] == 2
    assert {r.round for r in fake.chats} == {1, 2}


def test_console_progress_of_a_cli_run(fake_llm, azclaw, workdir):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--max-rounds", "2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    for agent in ("architect", "developer", "reviewer"):
        assert any("round 2" in ln and agent in ln for ln in out.splitlines()), agent
    assert run_file(workdir / "logs", ".log", exclude="local_server.log").is_file()


# -- bad input -----------------------------------------------------

def test_missing_topic_names_it(fake_llm, azclaw):
    fake = fake_llm()
    proc = azclaw("run", "--topic", "no-such-topic", "--endpoint", fake.url)
    assert_one_error_line(proc, "no-such-topic")
    assert fake.requests == []


@pytest.mark.parametrize("content, names", [
    ('{"title": "x",', ["broken.json", "line"]),
    (json.dumps({"title": "x", "rounds": 3}), ["broken.json", "rounds"]),
    (json.dumps({"title": "x", "phases": [{"name": "a", "rounds": [1, 2]}, {"name": "b", "rounds": [2]}]}),
     ["broken.json", "phases[1].rounds"]),
    (json.dumps({"phases": []}), ["broken.json", "title"]),
    (json.dumps({"title": "x", "coherence_probes": [{"after_round": 1}]}), ["broken.json", "coherence_probes[0]"]),
], ids=["bad-json", "unknown-field", "bad-rounds", "no-title", "probe-without-question"])
def test_malformed_topic_names_file_and_field(fake_llm, azclaw, workdir, content, names):
    (workdir / "broken.json").write_text(content)
    fake = fake_llm()
    proc = azclaw("run", "--topic", "broken.json", "--endpoint", fake.url)
    assert_one_error_line(proc, *names)
    assert fake.requests == []


@pytest.mark.parametrize("spec, named", [
    ("alice:ftp://example.org", "alice"),
    ("alice/admin:{url}", "/admin"),
    ("alice:{url},,bob:{url}", "entry 2"),
    ("bad name:{url}", "bad name"),
    ("alice:{url},alice:{url}", "alice"),
    ("/write:{url}", "agent name"),
])
def test_bad_agents_spec_is_one_error_line(fake_llm, azclaw, spec, named):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--agents", spec.format(url=fake.url), "--max-rounds", "1")
    line = assert_one_error_line(proc, named)
    assert "agent" in line
    assert fake.chats == []


def test_missing_checkpoint_names_the_path(fake_llm, azclaw):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--resume", "logs/missing_checkpoint.json")
    assert_one_error_line(proc, "logs/missing_checkpoint.json")
    assert fake.chats == []


def test_resume_without_any_checkpoint_names_where_it_looked(fake_llm, azclaw):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--name", "task", "--endpoint", fake.url, "--resume")
    assert_one_error_line(proc, "task_checkpoint.json")


def test_unreachable_endpoint_names_the_url(azclaw, dead_url):
    proc = azclaw("run", "--task", "x", "--endpoint", dead_url, "--max-rounds", "1")
    port = dead_url.split(":")[2].split("/")[0]
    assert_one_error_line(proc, f"127.0.0.1:{port}")


def test_bad_endpoint_url_is_one_error_line(azclaw):
    proc = azclaw("run", "--task", "x", "--endpoint", "localhost-no-scheme", "--max-rounds", "1")
    assert_one_error_line(proc, "localhost-no-scheme")


def test_missing_source_folder_is_one_error_line(fake_llm, azclaw):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--source", "no-such-dir")
    assert_one_error_line(proc, "no-such-dir")


def test_run_without_topic_or_task_is_a_usage_error(azclaw):
    proc = azclaw("run")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "--topic" in proc.stderr and "--task" in proc.stderr


def test_unreachable_second_agent_endpoint_is_the_one_named(fake_llm, azclaw, dead_url):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--agents", f"alice:{fake.url},bob:{dead_url}", "--max-rounds", "1")
    port = dead_url.split(":")[2].split("/")[0]
    line = assert_one_error_line(proc, f"127.0.0.1:{port}")
    assert fake.base not in line
    assert fake.chats == []


def test_endpoint_failing_every_turn_aborts_with_one_error_line_naming_it(fake_llm, azclaw, workdir):
    html = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body>\n</html>\n"
    fake = fake_llm(responder=lambda request: Reply(status=400, body=html))
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--max-rounds", "5", "--quiet",
                  "--retries", "0", "--max-failed-rounds", "2")
    assert_one_error_line(proc, fake.url)
    assert {r.round for r in fake.chats} == {1}  # round 1 tried twice (three agents): a failed round is not done
    assert read_json(run_file(workdir / "logs", "_checkpoint.json"))["round"] == 0


@pytest.mark.parametrize("value", ["0", "-3"])
def test_max_rounds_below_one_is_refused(fake_llm, azclaw, value):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--max-rounds", value)
    assert proc.returncode != 0, f"--max-rounds {value} ran {len(fake.chats)} requests"
    assert "Traceback" not in proc.stderr
    assert "max-rounds" in proc.stderr or "max_rounds" in proc.stderr
    assert fake.chats == []


@pytest.mark.parametrize("args, named", [
    (["--endpoint", "http://[::1/v1"], "http://[::1/v1"),
    (["--agents", "alice:http://host:port/v1"], "http://host:port/v1"),
    (["--retries", "-1"], "retries"),
    (["--timeout", "0"], "timeout"),
    (["--max-failed-rounds", "0"], "max_failed_rounds"),
    (["--context-budget", "-1"], "context_budget"),
    (["--output", "a-file"], "a-file"),
    (["--log-dir", "a-file"], "a-file"),
    (["--agents-dir", "a-file"], "a-file"),
    (["--resume", "a-folder"], "a-folder"),
    (["--resume", "latin1.json"], "latin1.json"),
], ids=["bad-ipv6-url", "bad-port", "negative-retries", "zero-timeout", "zero-failed-rounds",
        "negative-budget", "output-is-a-file", "log-dir-is-a-file", "agents-dir-is-a-file",
        "resume-a-folder", "resume-not-utf8"])
def test_bad_options_are_one_error_line_not_a_traceback(fake_llm, azclaw, workdir, args, named):
    (workdir / "a-file").write_text("not a folder\n")
    (workdir / "a-folder").mkdir()
    (workdir / "latin1.json").write_bytes(b'{"format": "caf\xe9"}')
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--max-rounds", "1", "--quiet", *args)
    assert_one_error_line(proc, named)
    assert fake.chats == []


@pytest.mark.parametrize("make, named", [
    (lambda d: (d / "folder-topic").mkdir(), "folder-topic"),
    (lambda d: (d / "folder-topic").write_bytes(b'{"title": "caf\xe9"}'), "folder-topic"),
], ids=["a-folder", "not-utf8"])
def test_topic_that_is_a_folder_or_not_text_is_one_error_line(fake_llm, azclaw, workdir, make, named):
    make(workdir)
    fake = fake_llm()
    proc = azclaw("run", "--topic", "folder-topic", "--endpoint", fake.url, "--max-rounds", "1")
    assert_one_error_line(proc, named)
    assert fake.requests == []


def test_stop_into_a_missing_folder_is_one_error_line(azclaw):
    proc = azclaw("stop", "--dir", "no-such-dir")
    assert_one_error_line(proc, "no-such-dir")


# -- many servers: --endpoints, --header, the routing key ---------------------------------------

def test_endpoints_spread_the_team_over_a_pool_and_every_request_carries_its_headers(fake_llm, azclaw):
    a, b = fake_llm(), fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoints", f"{a.url},{b.base}", "--agents", "p,q,r,s",
                  "--header", "X-Team=blue", "--header", "X-Gateway-Route = code", "--parallel",
                  "--max-rounds", "2", "--name", "pooled", "--quiet")
    assert proc.returncode == 0, proc.stderr
    where = {r.agent: {f.base for f in (a, b) if r in f.chats} for r in a.chats + b.chats}
    assert sorted(where) == ["p", "q", "r", "s"] and all(len(s) == 1 for s in where.values())
    assert len(a.chats) == len(b.chats) == 4  # two agents on each, two rounds
    for r in a.chats + b.chats:
        assert (r.header("x-smg-routing-key"), r.header("X-Team"), r.header("X-Gateway-Route")) == \
            (f"azclaw-pooled-{r.agent}", "blue", "code")


def test_routing_header_renames_the_key_and_no_routing_key_leaves_it_out(fake_llm, azclaw):
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--agents", "solo", "--max-rounds", "1",
                  "--routing-header", "X-Session-Id", "--name", "night", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert [(r.header("X-Session-Id"), r.header("x-smg-routing-key")) for r in fake.chats] == \
        [("azclaw-night-solo", None)]
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--agents", "solo", "--max-rounds", "1",
                  "--no-routing-key", "--name", "day", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert [(r.header("X-Session-Id"), r.header("x-smg-routing-key")) for r in fake.chats[1:]] == [(None, None)]


@pytest.mark.parametrize("args, named", [
    (["--endpoint", "http://127.0.0.1:9", "--endpoints", "http://127.0.0.1:8,http://127.0.0.1:7"],
     "--endpoint and --endpoints"),
    (["--endpoints", "http://127.0.0.1:8,ftp://x"], "--endpoints: endpoint 'ftp://x'"),
    (["--endpoints", "http://127.0.0.1:8,http://127.0.0.1:8/v1"], "named twice"),
    (["--endpoint", "http://127.0.0.1:9", "--header", "X-Team"], "--header 'X-Team': expected NAME=VALUE"),
    (["--endpoint", "http://127.0.0.1:9", "--header", "Bad Name=x"], "'Bad Name' is not a header name"),
    (["--endpoint", "http://127.0.0.1:9", "--header", "Host=x"], "Host is set by azclaw itself"),
    (["--endpoint", "http://127.0.0.1:9", "--routing-header", "x:y"], "routing_header: 'x:y'"),
    (["--endpoint", "http://127.0.0.1:9", "--per-server", "-1"], "per_server: expected a whole number >= 0"),
    (["--endpoint", "http://127.0.0.1:9", "--parallel", "--max-concurrency", "-2"], "max_concurrency"),
    (["--local", "--endpoints", "http://127.0.0.1:8"], "leave out --endpoints"),
])
def test_bad_pool_and_header_options_are_one_error_line(azclaw, args, named):
    assert_one_error_line(azclaw("run", "--task", "x", "--max-rounds", "1", *args), named)
