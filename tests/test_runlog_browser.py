"""``azclaw report --serve`` in a real headless Chromium: the page renders its
charts and transcript, a screenshot is taken, and the page's own script
brings in what the run writes after the page was loaded.

Skipped without /usr/bin/chromium (``apt-get install chromium``; .ci/run
installs it when it runs as root)."""

from __future__ import annotations

import re
import signal
import struct
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from azclaw.runlog.journal import Journal
from helpers import CLI_TIMEOUT, wait_for

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no /usr/bin/chromium: apt-get install chromium to check the live page "
                                       "in a real browser")
AGENTS = ["architect", "developer", "reviewer"]
CLOSE_ROUND_1 = b'<script>document.querySelector("#round-1 > summary").click();</script>'


def chromium(*args: str, budget_ms: int = 0) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile and nothing fetched but the page;
    ``budget_ms`` of virtual time lets the page's timers run (it waits for
    pending fetches, so no real time is guessed)."""
    with tempfile.TemporaryDirectory() as profile:
        command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={profile}"]
        if budget_ms:
            command.append(f"--virtual-time-budget={budget_ms}")
        return subprocess.run(command + list(args), capture_output=True, text=True, timeout=CLI_TIMEOUT,
                              stdin=subprocess.DEVNULL)


def start_run(path: Path) -> Journal:
    journal = Journal(path)
    journal.write("run_start", topic="watched", title="A watched run", first_round=1, last_round=6, agents=AGENTS,
                  resumed_from=None, pid=None, host="",
                  phases=[{"name": "Design", "rounds": [1, 3]}, {"name": "Build", "rounds": [4, 6]}], probes=[])
    return journal


def write_rounds(journal: Journal, first: int, last: int) -> None:
    """Rounds as a run writes them: three agents, the developer with a tool
    call, and what a model wrote that HTML must escape."""
    for r in range(first, last + 1):
        for n, agent in enumerate(AGENTS):
            calls = []
            if agent == "developer":
                calls = [{"tool": "run_python", "arguments": '{"code": "print(1 < 2)"}',
                          "result": "[exit code 0]\nTrue", "ok": True, "seconds": 0.2, "step": 0}]
            journal.write("turn_start", round=r, agent=agent)
            journal.write("turn", agent=agent, round=r, phase="Design" if r <= 3 else "Build",
                          text=f"{agent} in round {r}: <em>not markup</em>", requests=1 + len(calls),
                          prompt_tokens=900 + 40 * n, completion_tokens=120, seconds=6.0 + n,
                          context_tokens=900 + 40 * n, tool_calls={"run_python": 1} if calls else {},
                          memories=[f"note {r}"] if agent == "architect" else [], calls=calls)
        journal.write("round_end", round=r)


@pytest.fixture
def served(workdir, azclaw_popen):
    """``azclaw report --serve`` of a 2-round journal; yields (journal, url)."""
    journal = start_run(workdir / "logs" / "watched_journal.jsonl")
    write_rounds(journal, 1, 2)
    server = azclaw_popen("report", "--serve", "--charts", "svg")
    out = workdir / "out0.txt"
    wait_for(lambda: "http://" in out.read_text() or server.poll() is not None, CLI_TIMEOUT, "the URL")
    url = re.search(r"http://127\.0\.0\.1:\d+/", out.read_text()).group(0)
    yield journal, url
    server.send_signal(signal.SIGINT)
    assert server.wait(timeout=CLI_TIMEOUT) == 0


def test_the_rendered_page_has_the_charts_and_the_transcript(served):
    _, url = served
    dom = chromium("--dump-dom", url).stdout
    assert dom.count('<figure class="chart">') == 4 and dom.count("<polyline") >= 6
    assert re.findall(r'<details class="round" id="round-(\d)"', dom) == ["1", "2"]
    assert "developer in round 2: &lt;em&gt;not markup&lt;/em&gt;" in dom and "<em>" not in dom
    assert '<summary><code>run_python</code> <span class="ok">ok</span>' in dom


def test_the_page_brings_in_what_the_run_writes_after_it_was_loaded(served):
    journal, url = served
    polls: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        """Passes the browser's requests on; before answering its first
        /version poll, the run writes round 3 (the page is loaded by then).
        Into the first page it adds a reader's click that closes round 1."""

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.startswith("/version") and "/version" not in polls:
                write_rounds(journal, 3, 3)
            polls.append(self.path)
            try:
                with urllib.request.urlopen(url + self.path.lstrip("/"), timeout=CLI_TIMEOUT) as answer:
                    status, body, kind = answer.status, answer.read(), answer.headers["Content-Type"]
            except urllib.error.HTTPError as exc:  # /favicon.ico
                status, body, kind = exc.code, exc.read(), exc.headers["Content-Type"]
            if self.path == "/" and polls == ["/"]:
                body = body.replace(b"</body>", CLOSE_ROUND_1 + b"</body>")
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        dom = chromium("--dump-dom", f"http://127.0.0.1:{proxy.server_address[1]}/", budget_ms=10000).stdout
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert polls[0] == "/" and "/version" in polls, polls
    assert re.search(r'<html[^>]* data-updates="[1-9]', dom), "the page's script updated it"
    rounds = re.findall(r'<details class="round" id="round-(\d)" data-v="\w+"( open="")?', dom)
    assert rounds == [("1", ""), ("2", ' open=""'), ("3", ' open=""')], "the round the reader closed stays closed"
    assert "reviewer in round 3: &lt;em&gt;not markup&lt;/em&gt;" in dom
    assert re.search(r'<div id="live" data-version="\w+" class="">live · (updated|checked)', dom)


def test_a_screenshot_of_the_served_page(served, tmp_path):
    _, url = served
    shot = tmp_path / "report.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1280,2400", url)
    assert shot.exists(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 2400)
    assert len(data) > 50_000, "a page with charts and text, not a blank one"
