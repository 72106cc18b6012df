"""MCP: tools from MCP servers in, the team's memory out.

The MCP server in the run tests is mcp-server-git, the reference server of
the Model Context Protocol project (from PyPI, not written here): its
read-only tools (git_status, git_log, ...) and the others (git_add,
git_commit, ...) are marked with readOnlyHint. The server that crashes and
hangs on request, tests/mcp_flaky_server.py, is written here with the SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the MCP tests need the MCP SDK: pip install -e '.[test]'")

from mcp import Client, StdioServerParameters  # noqa: E402
import mcp_types  # noqa: E402

from azclaw import ToolRegistry  # noqa: E402
from azclaw.errors import ConfigError, ToolError  # noqa: E402
from azclaw.mcp import add_server, parse_option, parse_servers, servers_of  # noqa: E402
from azclaw.mcp.client import render  # noqa: E402
from azclaw.topic import Topic  # noqa: E402
from fakellm import call, text  # noqa: E402
from helpers import CLI_TIMEOUT, assert_one_error_line, cli_env, journal, wait_for  # noqa: E402

FLAKY = Path(__file__).parent / "mcp_flaky_server.py"
TEAM = "architect/read,developer/write"


@pytest.fixture
def repo(workdir) -> Path:
    """A git repository with one commit and one untracked file, notes.txt."""
    path = workdir / "repo"
    path.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "t@example.org"], ["config", "user.name", "Test"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    (path / "README").write_text("a repository\n")
    subprocess.run(["git", "add", "README"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-qm", "first commit"], cwd=path, check=True)
    (path / "notes.txt").write_text("ledger: CSV with ISO dates\n")
    return path


def git_server(repo: Path) -> str:
    return f"notes={shlex.quote(sys.executable)} -m mcp_server_git --repository {shlex.quote(str(repo))}"


def commits(repo: Path) -> list[str]:
    out = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def processes_with(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "pytest" not in cmdline:
            found.append(cmdline)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def result_of(fake, agent: str, tool: str) -> str:
    """The result of ``tool`` as the model of ``agent`` received it."""
    for request in fake.chats_of(agent):
        calls = {c["id"]: c["function"]["name"] for m in request.messages for c in m.get("tool_calls") or []}
        for message in request.messages:
            if message.get("role") == "tool" and calls.get(message.get("tool_call_id")) == tool:
                return message["content"]
    raise AssertionError(f"{agent} never received a result of {tool}")


# -- tools in -------------------------------------------------------------------------------

def test_a_real_servers_read_only_tool_reaches_every_agent_and_the_other_only_the_writer(fake_llm, azclaw, repo):
    fake = fake_llm(per_agent={
        "architect": [call("notes__git_status", {"repo_path": str(repo)}),
                      call("notes__git_commit", {"repo_path": str(repo), "message": "commit by the reader"}),
                      text("I looked at the repository.")],
        "developer": [call("notes__git_status", {"repo_path": str(repo)}),
                      call("notes__git_add", {"repo_path": str(repo), "files": ["notes.txt"]}),
                      call("notes__git_commit", {"repo_path": str(repo), "message": "commit by the writer"}),
                      text("Committed the notes.")]})
    proc = azclaw("run", "--task", "Keep the notes in git", "--endpoint", fake.url, "--agents", TEAM,
                  "--max-rounds", "1", "--quiet", "--mcp", git_server(repo))
    assert proc.returncode == 0, proc.stderr

    for request in fake.chats_of("architect"):
        assert "notes__git_status" in request.tool_names and "notes__git_log" in request.tool_names
        assert "notes__git_commit" not in request.tool_names and "notes__git_add" not in request.tool_names
    for request in fake.chats_of("developer"):
        assert {"notes__git_status", "notes__git_add", "notes__git_commit"} <= set(request.tool_names)
    schema = next(t for t in fake.chats_of("developer")[0].body["tools"]
                  if t["function"]["name"] == "notes__git_commit")["function"]
    assert schema["description"] == "Records changes to the repository"
    assert schema["parameters"]["required"] == ["repo_path", "message"]

    status = result_of(fake, "architect", "notes__git_status")
    assert "Repository status" in status and "notes.txt" in status
    refused = result_of(fake, "architect", "notes__git_commit")
    assert refused.startswith("ERROR: tool 'notes__git_commit' is not available to architect"), refused
    assert result_of(fake, "developer", "notes__git_commit").startswith("Changes committed successfully")
    assert commits(repo) == ["commit by the writer", "first commit"]  # the reader's commit never reached it
    assert processes_with(str(repo)) == []  # the server stopped with the run


def test_roles_override_the_read_only_hint_per_tool_and_per_server(repo):
    python = [sys.executable, "-m", "mcp_server_git", "--repository", str(repo)]
    with ToolRegistry() as registry:
        added = add_server(registry, "notes", python, roles={"git_status": "none", "git_commit": "all"})
        add_server(registry, "locked", python, roles="writers")
        assert "notes__git_status" not in added and registry.get("notes__git_status") is None
        assert registry.get("notes__git_commit").writer_only is False
        assert registry.get("notes__git_add").writer_only is True
        assert registry.get("notes__git_log").writer_only is False
        assert registry.get("locked__git_log").writer_only is True
        assert "Commit history" in registry.get("notes__git_log").func(repo_path=str(repo))
        with pytest.raises(ToolError, match="notes__git_log"):  # isError: an ERROR result
            registry.get("notes__git_log").func(repo_path=str(repo / "no-such-folder"))
    assert processes_with(str(repo)) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("azclaw-mcp-")]


@pytest.mark.slow  # a crash, a hang past its 2 s timeout and restarts of a real server
def test_a_server_that_crashes_or_hangs_gives_error_results_and_the_run_finishes(fake_llm, azclaw, workdir):
    topic = {"title": "flaky tools", "initial_prompt": "Use the tools.", "mcp_servers": {
        "flaky": {"command": sys.executable, "args": [str(FLAKY), str(workdir)], "timeout": 2}}}
    (workdir / "flaky.json").write_text(json.dumps(topic))
    fake = fake_llm(per_agent={"developer": [
        call("flaky__echo", {"text": "one"}), call("flaky__crash"), call("flaky__echo", {"text": "two"}),
        call("flaky__hang"), call("flaky__echo", {"text": "three"}), text("The tools are broken.")]})
    proc = azclaw("run", "--topic", "flaky.json", "--endpoint", fake.url, "--agents", "developer/write",
                  "--max-rounds", "1", "--quiet", "--allow-topic-commands")
    assert proc.returncode == 0, proc.stderr

    results = fake.chats_of("developer")[-1].tool_results
    first, crashed, second, hung, down = results
    assert first.startswith("echo one from pid ")
    assert crashed.startswith("ERROR: flaky__crash: the connection closed") and "restarted" in crashed, crashed
    assert second.startswith("echo two from pid ") and second.split()[-1] != first.split()[-1]  # a new process
    assert hung.startswith("ERROR: flaky__hang: no answer within 2 s") and "it is down" in hung, hung
    assert down.startswith("ERROR: MCP server 'flaky' is down"), down
    assert journal(workdir / "logs" / "flaky_journal.jsonl")[-1]["reason"] == "max_rounds"
    assert processes_with(str(workdir)) == []


def test_a_server_that_cannot_start_stops_the_run_before_it_starts_with_one_line(fake_llm, azclaw, workdir):
    fake = fake_llm()
    failing = f"bad={shlex.quote(sys.executable)} -c \"import sys; sys.exit('no database given')\""
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--max-rounds", "1", "--mcp", failing)
    assert_one_error_line(proc, "MCP server 'bad'", "no database given")
    assert fake.chats == []
    missing = azclaw("run", "--task", "x", "--endpoint", fake.url, "--mcp", "gone=no-such-mcp-server --flag")
    assert_one_error_line(missing, "MCP server 'gone'", "no-such-mcp-server: command not found")


def test_mcp_without_the_sdk_says_how_to_install_it(fake_llm, azclaw, workdir):
    shadow = workdir / "shadow" / "mcp"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--mcp", "notes=some-server",
                  env=cli_env(PYTHONPATH=str(workdir / "shadow")))
    assert_one_error_line(proc, "pip install 'azclaw[mcp]'")
    assert fake.chats == []


def test_doctor_lists_each_servers_tools_with_their_roles_and_its_failures(fake_llm, azclaw, repo):
    fake = fake_llm()
    proc = azclaw("doctor", "--endpoint", fake.url, "--timeout", "5", "--mcp", git_server(repo),
                  "--mcp", "gone=no-such-mcp-server")
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("OK   mcp notes: ") and "12 tools" in ln for ln in lines), proc.stdout
    assert "OK   mcp tool notes__git_status: every agent (marked readOnlyHint)" in lines
    assert "OK   mcp tool notes__git_commit: writers only (not marked readOnlyHint)" in lines
    assert any(ln.startswith("FAIL mcp gone: ") and "command not found" in ln for ln in lines), proc.stdout
    assert proc.returncode == 1
    assert processes_with(str(repo)) == []


# -- a topic's commands run only when the user says so -----------------------------------------

def marker_topic(workdir: Path, extra: dict | None = None) -> Path:
    """A topic whose MCP server command only leaves a file behind (``ran``) when it runs."""
    command = {"command": sys.executable, "args": ["-c", 'open("ran", "w").write("pwned")', "\x1b[2Jcleared"]}
    topic = {"title": "travelled", "initial_prompt": "hi", "mcp_servers": {"evil": command, **(extra or {})}}
    (workdir / "shared.json").write_text(json.dumps(topic))
    return workdir / "shared.json"


def on_a_terminal(args: list[str], answer: str, cwd: Path) -> tuple[int, str]:
    """Run azclaw with a pseudo-terminal as stdin and stderr; answer the topic question."""
    import pty
    main, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "azclaw", *args], cwd=cwd, env=cli_env(), stdin=secondary,
                            stderr=secondary, stdout=subprocess.DEVNULL)
    os.close(secondary)
    seen, answered = b"", False
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the process closed the terminal: it ended
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(main, answer.encode() + b"\n")
            answered = True
    proc.wait(timeout=CLI_TIMEOUT)
    os.close(main)
    return proc.returncode, seen.decode(errors="replace")


def test_a_topics_command_never_runs_without_a_terminal_or_the_flag(fake_llm, azclaw, workdir):
    fake = fake_llm()
    marker_topic(workdir)
    proc = azclaw("run", "--topic", "shared.json", "--endpoint", fake.url, "--max-rounds", "1")
    line = assert_one_error_line(proc, "shared.json", "mcp_servers.evil", 'open("ran", "w")',
                                 "--allow-topic-commands")
    assert "\x1b" not in line and "\\x1b[2Jcleared" in line  # the command as text, no escape code
    assert not (workdir / "ran").exists() and fake.chats == [] and not (workdir / "logs").exists()


@pytest.mark.parametrize("answer, runs", [("y", True), ("n", False), ("", False)])
def test_on_a_terminal_a_topics_commands_are_shown_and_run_only_after_a_yes(fake_llm, workdir, answer, runs):
    fake = fake_llm()
    marker_topic(workdir)
    code, screen = on_a_terminal(["run", "--topic", "shared.json", "--endpoint", fake.url, "--max-rounds", "1"],
                                 answer, workdir)
    assert "mcp_servers.evil runs: " in screen and "open(" in screen and "Run them? [y/N]" in screen, screen
    assert "\x1b[2J" not in screen
    assert (workdir / "ran").exists() == runs
    assert code != 0  # yes: the command ran but is no MCP server; no: nothing ran
    if not runs:
        assert "were not allowed, so nothing ran" in screen and fake.chats == []


def test_allow_topic_commands_runs_them_and_mcp_commands_are_the_users_own(fake_llm, azclaw, workdir):
    fake = fake_llm()
    marker_topic(workdir)
    proc = azclaw("run", "--topic", "shared.json", "--endpoint", fake.url, "--allow-topic-commands", "--quiet")
    assert (workdir / "ran").read_text() == "pwned"
    assert_one_error_line(proc, "MCP server 'evil'")  # it ran, and is no MCP server
    (workdir / "ran").unlink()
    own = f"mine={shlex.quote(sys.executable)} -c \"open('ran', 'w').write('mine')\""
    azclaw("run", "--task", "x", "--endpoint", fake.url, "--mcp", own)
    assert (workdir / "ran").read_text() == "mine"


def test_doctor_lists_a_topics_commands_and_runs_them_only_when_allowed(fake_llm, azclaw, workdir):
    fake = fake_llm()
    marker_topic(workdir, {"web": {"url": "http://127.0.0.1:9/mcp"}})
    proc = azclaw("doctor", "--topic", "shared.json", "--endpoint", fake.url, "--timeout", "10")
    listed = [ln for ln in proc.stdout.splitlines() if ln.startswith("WARN mcp evil: ")]
    assert len(listed) == 1 and "shared.json asks to run" in listed[0] and "--allow-topic-commands" in listed[0]
    assert any(ln.startswith("FAIL mcp web: ") for ln in proc.stdout.splitlines()), proc.stdout  # a URL: checked
    assert not (workdir / "ran").exists()
    azclaw("doctor", "--topic", "shared.json", "--endpoint", fake.url, "--timeout", "10", "--allow-topic-commands")
    assert (workdir / "ran").exists()


def test_a_topics_http_servers_run_nothing_here_and_are_said(fake_llm, azclaw, workdir):
    fake = fake_llm()
    topic = {"title": "remote", "mcp_servers": {"web": {"url": "http://127.0.0.1:9/mcp"}}}
    (workdir / "remote.json").write_text(json.dumps(topic))
    proc = azclaw("run", "--topic", "remote.json", "--endpoint", fake.url, "--max-rounds", "1")
    assert "remote.json: mcp_servers.web connects to http://127.0.0.1:9/mcp" in proc.stderr
    assert "allow-topic-commands" not in proc.stderr and "MCP server 'web'" in proc.stderr


# -- the team's memory out ------------------------------------------------------------------

def first_run(fake_llm, azclaw):
    fake = fake_llm(per_agent={"architect": [
        call("remember", {"text": "The ledger format is CSV with ISO dates.", "title": "ledger-format"}),
        text("Decided the ledger format.")]})
    proc = azclaw("run", "--task", "Design a ledger", "--endpoint", fake.url, "--agents", TEAM,
                  "--max-rounds", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr


async def talk_to_azclaw_mcp(folder: Path) -> dict:
    server = StdioServerParameters(command=sys.executable, args=["-m", "azclaw", "mcp", "--dir", str(folder)])
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}

        async def use(name, **args):
            result = await client.call_tool(name, args)
            return ("ERROR " if result.is_error else "") + render(result)
        found = await use("recall", query="what ledger format did we decide")
        stored = await use("remember", text="A person says: the ledger also keeps a currency column.",
                           title="person-note", agent="developer")
        stranger = await use("remember", text="x", title="y", agent="nobody")
        listed = await use("list_memories", limit=5)
        status = (await client.read_resource("azclaw://status")).contents[0].text
    return {"tools": tools, "found": found, "stored": stored, "stranger": stranger, "listed": listed,
            "status": status}


def test_an_mcp_client_recalls_the_teams_memories_and_leaves_a_note_an_agent_then_recalls(
        fake_llm, azclaw, workdir):
    first_run(fake_llm, azclaw)
    seen = asyncio.run(talk_to_azclaw_mcp(workdir))

    assert set(seen["tools"]) == {"recall", "list_memories", "remember", "status"}
    assert seen["tools"]["recall"].annotations.read_only_hint is True
    assert seen["tools"]["remember"].annotations.read_only_hint is False
    assert "CSV with ISO dates" in seen["found"] and "by architect" in seen["found"]
    assert seen["stored"].startswith("Stored in developer's memory as 'person-note'")
    assert seen["stranger"].startswith("ERROR ") and "unknown agent 'nobody'" in seen["stranger"]
    assert "person-note (by developer)" in seen["listed"] and "ledger-format (by architect)" in seen["listed"]
    assert "Design a ledger" in seen["status"] and "max_rounds" in seen["status"]

    fake = fake_llm(per_agent={"architect": [call("recall", {"query": "currency column"}), text("Noted.")]})
    proc = azclaw("run", "--task", "Go on with the ledger", "--endpoint", fake.url, "--agents", TEAM,
                  "--max-rounds", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    recalled = result_of(fake, "architect", "recall")
    assert "currency column" in recalled and "by developer" in recalled


def test_azclaw_mcp_read_only_offers_no_remember(workdir, fake_llm, azclaw):
    first_run(fake_llm, azclaw)

    async def tools():
        server = StdioServerParameters(command=sys.executable,
                                       args=["-m", "azclaw", "mcp", "--dir", str(workdir), "--read-only"])
        async with Client(server) as client:
            return {t.name for t in (await client.list_tools()).tools}
    assert asyncio.run(tools()) == {"recall", "list_memories", "status"}


def test_one_run_uses_another_runs_memory_over_streamable_http(fake_llm, azclaw, azclaw_popen, workdir):
    first_run(fake_llm, azclaw)
    port = free_port()
    server = azclaw_popen("mcp", "--dir", str(workdir), "--http", str(port))

    def listening() -> bool:
        assert server.poll() is None, (workdir / "err0.txt").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(listening, CLI_TIMEOUT, "azclaw mcp --http to listen")

    other = workdir / "other"
    other.mkdir()
    fake = fake_llm(per_agent={"reader": [call("team__recall", {"query": "ledger format"}),
                                          call("team__remember", {"text": "x", "title": "y", "agent": "architect"}),
                                          text("The other team uses CSV.")]})
    proc = subprocess.run([sys.executable, "-m", "azclaw", "run", "--task", "Ask the other team", "--endpoint",
                           fake.url, "--agents", "reader/read", "--max-rounds", "1", "--quiet",
                           "--mcp", f"team=http://127.0.0.1:{port}/mcp"], cwd=other, env=cli_env(),
                          capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert set(fake.chats_of("reader")[0].tool_names) >= {"team__recall", "team__list_memories", "team__status"}
    assert "team__remember" not in fake.chats_of("reader")[0].tool_names
    assert "CSV with ISO dates" in result_of(fake, "reader", "team__recall")
    assert result_of(fake, "reader", "team__remember").startswith("ERROR: tool 'team__remember' is not available")
    server.terminate()
    server.wait(CLI_TIMEOUT)


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}


def mcp_post(port: int, message: dict, session: str | None = None) -> tuple[int, str | None]:
    """One JSON-RPC message to ``azclaw mcp --http``: the HTTP status and the session id it names."""
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLI_TIMEOUT)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               **({"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"} if session else {})}
    connection.request("POST", "/mcp", json.dumps(message), headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, response.getheader("mcp-session-id")


def serving_mcp(azclaw_popen, workdir, *options: str) -> tuple[int, subprocess.Popen]:
    from azclaw.memory import TeamMemory
    TeamMemory({"architect": workdir / "agents" / "architect"}).close()  # an agent's memory folder
    port = free_port()
    server = azclaw_popen("mcp", "--dir", str(workdir), "--http", str(port), *options)

    def listening() -> bool:
        assert server.poll() is None, (workdir / "err0.txt").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(listening, CLI_TIMEOUT, "azclaw mcp --http to listen")
    return port, server


def rss_kb(pid: int) -> int:
    return int(next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if ln.startswith("VmRSS:")).split()[1])


@pytest.mark.slow  # 2,032 HTTP requests
def test_azclaw_mcp_http_holds_a_bounded_number_of_sessions(azclaw_popen, workdir):
    from azclaw.mcp.config import MAX_SESSIONS
    port, server = serving_mcp(azclaw_popen, workdir)
    first = [mcp_post(port, INITIALIZE) for _ in range(MAX_SESSIONS)]
    assert {status for status, _ in first} == {200}
    before = rss_kb(server.pid)
    flood = [mcp_post(port, INITIALIZE)[0] for _ in range(2000)]
    assert flood.count(200) == 0 and flood.count(503) == 2000, "the open sessions are all it holds"
    # measured: +0.15 MB for the 2,000 refused (they were +80 MB, 40 KB a session, before the bound)
    assert rss_kb(server.pid) - before < 16_000
    assert mcp_post(port, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, first[0][1])[0] == 200
    server.terminate()
    server.wait(CLI_TIMEOUT)


def test_an_idle_mcp_session_expires_and_its_room_is_given_to_a_new_one(azclaw_popen, workdir):
    port, server = serving_mcp(azclaw_popen, workdir, "--session-timeout", "1", "--max-sessions", "1")
    status, session = mcp_post(port, INITIALIZE)
    assert status == 200 and session
    # the event: room for a new session (refusals do not touch the idle one; a ping would keep it alive)
    wait_for(lambda: mcp_post(port, INITIALIZE)[0] == 200, CLI_TIMEOUT, "the idle session to expire")
    assert mcp_post(port, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, session)[0] == 404, "it is gone"
    server.terminate()
    server.wait(CLI_TIMEOUT)


# -- specs and results ----------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("notes=python3 notes_server.py --db 'my notes.db'",
     {"command": ["python3", "notes_server.py", "--db", "my notes.db"], "url": ""}),
    ("web=https://example.org/mcp", {"command": [], "url": "https://example.org/mcp"}),
])
def test_mcp_option_values_name_a_command_or_a_url(value, expected):
    [spec] = parse_option(value)
    assert {"command": spec.command, "url": spec.url} == expected


@pytest.mark.parametrize("value, message", [
    ("notes", "expected NAME=COMMAND"),
    ("=python3 x.py", "server name ''"),
    ("a__b=python3 x.py", "server name 'a__b'"),
    ("notes=", "the command is empty"),
    ("notes=python3 'x.py", "cannot split the command"),
    ("notes=http://", r"expected an http\(s\)://host"),
])
def test_bad_mcp_option_values_are_one_clear_error(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_option(value)


@pytest.mark.parametrize("servers, message", [
    ({"notes": "python3 x.py"}, r"mcp_servers\.notes: expected an object"),
    ({"notes": {"command": "python3", "args": "x.py"}}, r"mcp_servers\.notes\.args: expected a list"),
    ({"notes": {"command": "python3", "env": {"DEBUG": 1}}}, r"mcp_servers\.notes\.env\.DEBUG: expected a string"),
    ({"notes": {"command": "x", "url": "http://h/mcp"}}, r"mcp_servers\.notes: give command .* or url"),
    ({"notes": {"url": "http://h/mcp", "type": "sse"}}, r"mcp_servers\.notes\.type: SSE"),
    ({"notes": {"command": "x", "roles": {"drop": "admins"}}}, r"mcp_servers\.notes\.roles\.drop: expected one of"),
    ({"notes": {"command": "x", "timeout": 0}}, r"mcp_servers\.notes\.timeout: expected seconds > 0"),
    ({"notes": {"command": "x", "autoApprove": []}}, r"mcp_servers\.notes: unknown field 'autoApprove'"),
])
def test_bad_mcp_servers_in_a_topic_name_the_field(workdir, servers, message):
    path = workdir / "t.json"
    path.write_text(json.dumps({"title": "t", "mcp_servers": servers}))
    with pytest.raises(ConfigError, match=f"t.json: {message}"):
        servers_of([], Topic.load(path))  # the topic checks the shape, the mcp wing the rest


def test_claude_desktop_configuration_files_are_read_as_they_are(workdir):
    config = {"mcpServers": {
        "notes": {"command": "python3", "args": ["server.py"], "env": {"DB": "x.db"}},
        "web": {"type": "http", "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer t"}}}}
    (workdir / "claude.json").write_text(json.dumps(config))
    notes, web = servers_of(["claude.json"])
    assert (notes.command, notes.env) == (["python3", "server.py"], {"DB": "x.db"})
    assert (web.url, web.headers) == ("http://127.0.0.1:9/mcp", {"Authorization": "Bearer t"})
    with pytest.raises(ConfigError, match="'notes' is given twice"):
        servers_of(["claude.json", "notes=python3 other.py"])
    assert [s.name for s in parse_servers({"a": {"url": "http://h/mcp"}})] == ["a"]


def test_results_describe_what_is_not_text():
    result = mcp_types.CallToolResult(content=[
        mcp_types.TextContent(type="text", text="two files"),
        mcp_types.ImageContent(type="image", data="AAAA", mime_type="image/png"),
        mcp_types.ResourceLink(type="resource_link", name="plan", uri="file:///plan.md", mime_type="text/markdown"),
        mcp_types.EmbeddedResource(type="resource", resource=mcp_types.TextResourceContents(
            uri="file:///a.txt", text="inside a.txt"))])
    assert render(result).splitlines() == [
        "two files", "[image content: image/png, 3 bytes; not shown]",
        "[resource link plan: file:///plan.md (text/markdown)]", "[resource file:///a.txt]", "inside a.txt"]
    assert render(mcp_types.CallToolResult(content=[], structured_content={"n": 1})) == '{"n": 1}'


def test_approval_asks_before_a_writers_mcp_tool_as_before_write_file(fake_llm, repo, workdir):
    from azclaw import Agent, Orchestrator
    fake = fake_llm(per_agent={"developer": [
        call("notes__git_add", {"repo_path": str(repo), "files": ["notes.txt"]}),
        call("notes__git_status", {"repo_path": str(repo)}), text("Tried to add the notes.")]})
    asked = []

    def approve(tool, preview):  # what --approve's terminal prompt does, answering no to everything
        asked.append((tool, preview))
        return False

    python = [sys.executable, "-m", "mcp_server_git", "--repository", str(repo)]
    with ToolRegistry() as registry:
        add_server(registry, "notes", python)
        orch = Orchestrator([Agent("developer", endpoint=fake.url, can_write=True)], registry=registry,
                            approve=approve, verbose=False)
        orch.run(max_rounds=1)
    assert [tool for tool, _ in asked] == ["notes__git_add"]  # a read-only tool (git_status) is not asked for
    assert "notes.txt" in asked[0][1]
    added, status = fake.chats_of("developer")[-1].tool_results
    assert added == "ERROR: notes__git_add was refused by the person supervising this run"
    assert "Untracked files" in status or "notes.txt" in status  # never added
