"""Watching a run: ``azclaw show`` (and ``--follow``), the agent
at work in ``azclaw status``, a closed output pipe, the report's transcript
and ``azclaw report --serve``, all through the real command."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from azclaw.runlog.journal import Journal
from azclaw.runlog.live import JournalTail
from fakellm import Reply, text
from helpers import CLI_TIMEOUT, assert_one_error_line, cli_env, journal, wait_for

SECRET = "<script>alert('x')</script>"


def scripted(request):
    """alice (a writer) remembers and runs code in round 1; everyone says who
    they are and which round it is."""
    if request.agent == "alice" and request.round == 1 and request.offers_tools and not request.tool_results:
        return Reply(tool_calls=[("remember", {"text": f"use sqlite {SECRET}", "title": "db"}),
                                 ("run_python", {"code": "print(6 * 7)"})])
    return text(f"{request.agent} says r{request.round} & <b>bold</b>")


@pytest.fixture
def finished(fake_llm, azclaw, workdir):
    """A finished 2-round run of alice (writer) and bob."""
    fake = fake_llm(responder=scripted)
    proc = azclaw("run", "--task", "Watch me", "--agents", f"alice/write:{fake.url},bob:{fake.url}",
                  "--max-rounds", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return fake


def blocks(out: str) -> list[str]:
    """The round headers and speakers of ``azclaw show``'s output, in order."""
    return re.findall(r"^(=== round \d+/\d+ ===|\[\w+\])", out, re.M)


# -- azclaw show ------------------------------------------------------------------

def test_show_prints_what_each_agent_said_round_by_round(finished, azclaw):
    proc = azclaw("show")
    assert proc.returncode == 0, proc.stderr
    assert blocks(proc.stdout) == ["=== round 1/2 ===", "[alice]", "[bob]", "=== round 2/2 ===", "[alice]", "[bob]"]
    for agent in ("alice", "bob"):
        for r in (1, 2):
            assert f"{agent} says r{r} & <b>bold</b>" in proc.stdout  # as the model wrote it: no escaping in text
    assert "tools: remember, run_python" in proc.stdout  # the names only, without --tools
    assert "print(6 * 7)" not in proc.stdout


@pytest.mark.parametrize("args, expected", [
    (["--round", "2"], ["=== round 2/2 ===", "[alice]", "[bob]"]),
    (["--agent", "bob"], ["=== round 1/2 ===", "[bob]", "=== round 2/2 ===", "[bob]"]),
    (["--round", "1-2", "--agent", "alice"], ["=== round 1/2 ===", "[alice]", "=== round 2/2 ===", "[alice]"]),
])
def test_show_filters_by_round_and_agent(finished, azclaw, args, expected):
    proc = azclaw("show", *args)
    assert proc.returncode == 0, proc.stderr
    assert blocks(proc.stdout) == expected


def test_show_tools_prints_each_call_with_its_arguments_and_result(finished, azclaw):
    out = azclaw("show", "--tools", "--round", "1", "--agent", "alice").stdout
    assert "  > remember (ok," in out and f"    text: use sqlite {SECRET}" in out and "    title: db" in out
    assert "  > run_python (ok," in out and "    code: print(6 * 7)" in out
    assert re.search(r"    result:\n      \[exit code 0\]\n      42\n", out), out
    assert out.index("> run_python") < out.index("alice says r1"), "tool calls come before the message"


@pytest.mark.parametrize("args, names", [
    (["--agent", "carol"], ["--agent carol", "alice, bob"]),
    (["--round", "7"], ["--round 7", "rounds 1 to 2"]),
    (["--round", "two"], ["--round two", "A-B"]),
])
def test_show_with_an_agent_or_round_the_run_does_not_have_is_one_error_line(finished, azclaw, args, names):
    assert_one_error_line(azclaw("show", *args), *names)


def test_show_without_a_run_says_where_it_looked(azclaw):
    assert_one_error_line(azclaw("show", "--log-dir", "nowhere"), "nowhere")


# -- a live run: show --follow and status -----------------------------------------

@pytest.fixture
def held_run(fake_llm, azclaw_popen, workdir):
    """A 2-round run of alice and bob whose round-2 reply to alice waits for
    ``release``; yields once that request has arrived."""
    release = threading.Event()

    def hold_alice_in_round_2(request):
        return text(f"{request.agent} says r{request.round}",
                    gate=release if (request.agent, request.round) == ("alice", 2) else None)

    fake = fake_llm(responder=hold_alice_in_round_2)
    run = azclaw_popen("run", "--task", "Watch me live", "--agents", f"alice:{fake.url},bob:{fake.url}",
                       "--max-rounds", "2", "--quiet")
    wait_for(lambda: any(r.round == 2 for r in fake.chats) or run.poll() is not None, CLI_TIMEOUT,
             "alice's request of round 2")
    assert run.poll() is None, (workdir / "err0.txt").read_text()
    yield run, release
    release.set()


def test_show_follow_prints_the_turns_of_a_live_run_as_they_happen(held_run, azclaw_popen, workdir):
    run, release = held_run
    follow = azclaw_popen("show", "--follow")
    out = workdir / "out1.txt"
    wait_for(lambda: "bob says r1" in out.read_text() or follow.poll() is not None, CLI_TIMEOUT, "round 1 shown")
    assert follow.poll() is None, "a follower waits for the run"
    assert "alice says r2" not in out.read_text()

    release.set()
    assert run.wait(timeout=CLI_TIMEOUT) == 0, (workdir / "err0.txt").read_text()
    assert follow.wait(timeout=CLI_TIMEOUT) == 0, "the follower ends with the run"
    assert blocks(out.read_text()) == ["=== round 1/2 ===", "[alice]", "[bob]", "=== round 2/2 ===", "[alice]",
                                       "[bob]"]
    assert out.read_text().rstrip().endswith("--- the run ended (max_rounds) after round 2 ---")
    assert (workdir / "err1.txt").read_text() == ""


def test_show_follow_ends_quietly_on_ctrl_c(held_run, azclaw_popen, workdir):
    follow = azclaw_popen("show", "--follow")
    wait_for(lambda: "bob says r1" in (workdir / "out1.txt").read_text() or follow.poll() is not None,
             CLI_TIMEOUT, "round 1 shown")
    follow.send_signal(signal.SIGINT)
    assert follow.wait(timeout=CLI_TIMEOUT) == 0
    assert (workdir / "err1.txt").read_text() == ""


def test_show_follow_ends_when_the_run_is_killed(held_run, azclaw_popen, workdir):
    run, _ = held_run
    follow = azclaw_popen("show", "--follow")
    wait_for(lambda: "bob says r1" in (workdir / "out1.txt").read_text() or follow.poll() is not None,
             CLI_TIMEOUT, "round 1 shown")
    run.kill()  # no run_end: only the process being gone tells
    run.wait(timeout=CLI_TIMEOUT)
    assert follow.wait(timeout=CLI_TIMEOUT) == 0
    out = (workdir / "out1.txt").read_text()
    assert f"--- the run's process (pid {run.pid}) ended without finishing (killed?)" in out


def test_show_follow_waits_for_a_run_to_start(fake_llm, azclaw, azclaw_popen, workdir):
    (workdir / "logs").mkdir()
    follow = azclaw_popen("show", "--follow")
    wait_for(lambda: "waiting" in (workdir / "err0.txt").read_text() or follow.poll() is not None, CLI_TIMEOUT,
             "the follower to wait")
    assert follow.poll() is None
    fake = fake_llm(responder=lambda request: text(f"{request.agent} says r{request.round}"))
    assert azclaw("run", "--task", "Late", "--agents", f"alice:{fake.url}", "--max-rounds", "1",
                  "--quiet").returncode == 0
    assert follow.wait(timeout=CLI_TIMEOUT) == 0
    assert "[alice]" in (workdir / "out0.txt").read_text() and "alice says r1" in (workdir / "out0.txt").read_text()


def test_status_during_a_held_turn_names_the_agent_at_work(held_run, azclaw):
    text_status = azclaw("status")
    assert text_status.returncode == 0, text_status.stderr
    assert "round 2/2 in progress (1 done)" in text_status.stdout
    assert re.search(r"^  working     alice for \d+s \(since \d\d:\d\d:\d\d UTC\)$", text_status.stdout, re.M), \
        text_status.stdout
    data = json.loads(azclaw("status", "--json").stdout)
    assert [(w["agent"], w["round"]) for w in data["working"]] == [("alice", 2)]
    assert data["working"][0]["seconds"] >= 0 and data["working"][0]["since"].startswith("20")


def test_status_after_the_run_names_nobody_at_work(finished, azclaw):
    assert "working" not in azclaw("status").stdout
    assert json.loads(azclaw("status", "--json").stdout)["working"] == []


# -- a reader that goes away ------------------------------------------------------

@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["show", "--tools"]])
def test_status_and_show_end_quietly_when_their_output_pipe_closes(finished, workdir, args):
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -1` that has already exited
    try:
        proc = subprocess.run([sys.executable, "-m", "azclaw", *args], cwd=workdir, env=cli_env(), stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    finally:
        os.close(write_end)
    assert proc.returncode == 0
    assert proc.stderr == ""


# -- the report's transcript ------------------------------------------------------

def test_the_report_has_a_transcript_of_every_round_with_tool_calls_escaped(finished, azclaw, workdir):
    proc = azclaw("report", "--out", "r.html", "--charts", "svg")
    assert proc.returncode == 0, proc.stderr
    page = (workdir / "r.html").read_text(encoding="utf-8")
    transcript = page[page.index('<section id="transcript"'):]
    assert re.findall(r'<details class="round" id="round-(\d)" data-v="\w+" open>', transcript) == ["1", "2"]
    assert "bob says r2 &amp; &lt;b&gt;bold&lt;/b&gt;" in transcript
    assert '<details class="call" id="r1-t0-c0"><summary><code>remember</code> <span class="ok">ok</span>' in transcript
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in transcript
    assert "<script" not in page, "the written report runs nothing"
    assert '<div class="k">code</div><pre>print(6 * 7)</pre>' in transcript
    assert re.search(r'<div class="k">result</div><pre>\[exit code 0\]\n42', transcript)


def test_only_the_newest_rounds_of_a_long_transcript_start_open(tmp_path):
    from azclaw.runlog.transcript import transcript_html
    from azclaw.turn import Turn
    page = transcript_html([Turn("a", r, text=f"r{r}") for r in range(1, 201)], [])
    assert page.count('<details class="round"') == 200
    assert re.findall(r'id="round-(\d+)" data-v="\w+" open', page) == ["198", "199", "200"]


# -- report --serve ---------------------------------------------------------------

def served_url(proc, out_file) -> str:
    wait_for(lambda: "http://" in out_file.read_text() or proc.poll() is not None, CLI_TIMEOUT, "the URL")
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", out_file.read_text())
    assert found, out_file.read_text()
    return found.group(0)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=CLI_TIMEOUT) as response:
        assert response.headers["Cache-Control"] == "no-store"
        return response.read().decode("utf-8")


def test_report_serve_keeps_the_page_current_as_the_run_goes_and_stops_on_ctrl_c(
        finished, azclaw, azclaw_popen, workdir):
    server = azclaw_popen("report", "--serve", "--charts", "svg")
    url = served_url(server, workdir / "out0.txt")
    page = get(url)
    assert "alice says r2" in page and 'id="round-2"' in page and "<figure class=\"chart\">" in page
    assert '<div id="live" data-version="' in page  # the live page's script is there
    version = get(url + "version")
    assert get(url + "version") == version, "nothing changed, same version"

    resumed = azclaw("run", "--task", "Watch me", "--agents", f"alice/write:{finished.url},bob:{finished.url}",
                     "--max-rounds", "3", "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: get(url + "version") != version, CLI_TIMEOUT, "a new version")
    page = get(url)
    assert "alice says r3" in page and 'id="round-3"' in page
    assert re.findall(r'id="round-(\d)" data-v="\w+"( open)?', page) == [("1", " open"), ("2", " open"),
                                                                         ("3", " open")]
    with pytest.raises(urllib.error.HTTPError):
        get(url + "elsewhere")

    server.send_signal(signal.SIGINT)
    assert server.wait(timeout=CLI_TIMEOUT) == 0
    err = (workdir / "err0.txt").read_text()
    assert "Traceback" not in err and "stopped serving" in err


def test_report_serve_on_a_given_port_and_before_any_run(azclaw_popen, workdir):
    (workdir / "logs").mkdir()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = azclaw_popen("report", "--serve", "--port", str(port))
    url = served_url(server, workdir / "out0.txt")
    assert url == f"http://127.0.0.1:{port}/"
    assert "Waiting for a run" in get(url)
    server.send_signal(signal.SIGINT)
    assert server.wait(timeout=CLI_TIMEOUT) == 0


def test_report_serve_answers_only_requests_addressed_to_the_loopback(finished, azclaw_popen, workdir):
    import http.client
    server = azclaw_popen("report", "--serve", "--charts", "svg")
    port = int(served_url(server, workdir / "out0.txt").rstrip("/").rsplit(":", 1)[1])

    def status(host: str, origin: str | None = None) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLI_TIMEOUT)
        headers = {"Host": host, **({"Origin": origin} if origin else {})}
        connection.request("GET", "/", headers=headers)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        assert response.status != 200 or b"alice says r2" in body
        return response.status

    for evil in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", f"127.0.0.1:{port + 1}"):
        assert status(evil) == 421, evil  # DNS rebinding: another site's name for this address
    assert status(f"127.0.0.1:{port}", origin="http://evil.example") == 403
    assert status(f"127.0.0.1:{port}") == 200
    assert status(f"localhost:{port}") == 200
    assert status(f"LocalHost:{port}", origin=f"http://localhost:{port}") == 200
    server.send_signal(signal.SIGINT)
    assert server.wait(timeout=CLI_TIMEOUT) == 0


@pytest.mark.parametrize("args, names", [
    (["--serve", "--out", "x.html"], ["--out", "--serve"]),
    (["--port", "8000"], ["--port", "--serve"]),
])
def test_report_serve_options_that_do_not_go_together(finished, azclaw, args, names):
    assert_one_error_line(azclaw("report", *args), *names)


# -- reading a journal as it grows --------------------------------------------------

def turn(journal_: Journal, round_no: int, agent: str, said: str) -> None:
    journal_.write("turn", round=round_no, agent=agent, text=said)


def test_a_journal_tail_returns_each_line_once_and_waits_for_a_torn_line(tmp_path):
    path = tmp_path / "t_journal.jsonl"
    writer = Journal(path)
    tail = JournalTail(path)
    assert tail.read() == []
    turn(writer, 1, "a", "one")
    assert [e.event.turn.text for e in tail.read()] == ["one"]
    assert tail.read() == []
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"v": 3, "event": "turn", "round": 1, "agent": "b", "te')
    assert tail.read() == [], "half a line is not an event yet"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('xt": "two"}\n')
    assert [e.event.turn.text for e in tail.read()] == ["two"]


def test_a_journal_tail_follows_a_rewind_and_an_archive(tmp_path):
    path = tmp_path / "t_journal.jsonl"
    writer = Journal(path)
    tail = JournalTail(path)
    for r in (1, 2, 3):
        turn(writer, r, "a", f"r{r}")
    assert [e.event.turn.text for e in tail.read()] == ["r1", "r2", "r3"]

    resumed = Journal.open(path, resumed_from=0)  # a resume rewrites the file without rounds 2 and 3
    turn(resumed, 2, "a", "r2 again")
    assert [e.event.turn.text for e in tail.read()] == ["r2 again"], "kept lines are not passed on twice"

    fresh = Journal.open(path)  # a fresh run renames the journal away and starts a new one
    turn(fresh, 1, "a", "new r1")
    assert [e.event.turn.text for e in tail.read()] == ["new r1"]
    assert [e["text"] for e in journal(path)] == ["new r1"]
