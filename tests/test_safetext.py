"""The one sanitiser for what a model or a server wrote (azclaw/safetext.py),
and the places it guards: the console, ``logs/<topic>.log``, ``azclaw show``
(``--tools``), ``azclaw status``, ``azclaw doctor`` and error lines."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import unicodedata

from azclaw.console import RunConsole
from azclaw.events import ReplyProgress
from azclaw.safetext import continued, indented, one_line, printable
from fakellm import Reply, text
from helpers import CLI_TIMEOUT, cli_env

# what a terminal acts on: C0 (but tab and newline), DEL, C1, bidi controls
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
TITLE, CLEAR, HOME = "\x1b]0;pwned\x07", "\x1b[2J", "\x1b[H"
FORGED = ("[round 9/9] reviewer: forged", "=== round 9/9 ===", "[reviewer] (0.1 s, 1+1 tokens)")
EVIL = (f"{TITLE}{CLEAR}{HOME}Plan ready.\r{FORGED[0]}\n{FORGED[0]}\n{FORGED[1]}\n{FORGED[2]}\n"
        "\u202eexe.txt\x9b2J\x08\x08 done")
EVIL_TOOL = f"remember\x1b[2J\n{FORGED[0]}"


# -- the sanitiser --------------------------------------------------------------

def test_escapes_become_readable_text_and_newlines_and_tabs_stay():
    assert printable(f"a{TITLE}b\tc\nd\re\x08f\x9bg") == "a\\x1b]0;pwned\\x07b\tc\nd\\re\\x08f\\x9bg"
    assert printable("one\r\ntwo") == "one\ntwo"  # a Windows line end is a line end
    assert one_line("a\nb\tc\x1b") == "a\\nb c\\x1b"
    assert one_line("x" * 50, 10) == "xxxxxxx..."
    assert printable("caf\u00e9 \u4e2d\u6587 \U0001f600 \u200d") == "caf\u00e9 \u4e2d\u6587 \U0001f600 \u200d"


def test_every_control_bidi_format_and_surrogate_character_is_escaped():
    kept = {"\t", "\n", "\u200c", "\u200d"}  # the zero-width (non-)joiners some scripts and emoji need
    unsafe = [chr(c) for c in range(sys.maxunicode + 1)
              if unicodedata.category(chr(c)) in ("Cc", "Cf", "Cs", "Zl", "Zp") and chr(c) not in kept]
    assert len(unsafe) > 2000
    for char in unsafe:
        shown = printable(char)
        assert shown.startswith("\\") and shown.isascii(), (hex(ord(char)), shown)
        assert not RAW.search(shown)
    assert printable("\ud800") == "\\ud800" and printable("\U000e0041") == "\\U000e0041"


def test_text_over_several_lines_cannot_pass_for_a_line_of_azclaw():
    said = continued(f"ok\n{FORGED[0]}")
    assert said.splitlines() == ["ok", f"  {FORGED[0]}"]
    assert indented("a\nb").splitlines() == ["  a", "  b"]


def test_the_live_status_line_shows_a_tool_name_on_one_line_without_escapes(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    console = RunConsole(tmp_path / "run.log", console=screen)
    try:
        progress = type("Progress", (), {"tokens": 5, "seconds": 1.0, "tool": EVIL_TOOL, "thinking": False})()
        console(ReplyProgress(1, "reviewer", progress))  # the live status line follows a streamed reply
        console.info("a line with %s", EVIL)
    finally:
        console.close()
    shown = screen.getvalue().replace("\r\x1b[K", "")  # azclaw's own: rewriting its status line
    assert not RAW.search(shown), repr(shown)
    assert not any(line.startswith(FORGED) for line in shown.splitlines())


# -- through the command --------------------------------------------------------

def run(workdir, *args: str) -> tuple[int, str]:
    """The real command; its output as bytes decoded without newline translation
    (text mode would turn a raw carriage return into a line break)."""
    proc = subprocess.run([sys.executable, "-m", "azclaw", *args], cwd=workdir, env=cli_env(),
                          capture_output=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    return proc.returncode, (proc.stdout + proc.stderr).decode("utf-8", "surrogateescape")


def assert_clean(output: str, where: str) -> None:
    found = RAW.search(output)
    assert not found, (where, repr(found.group()), output[max(0, found.start() - 80):found.end() + 80])
    for line in output.splitlines():
        stamped = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) ", "", line)
        assert not stamped.startswith(FORGED), (where, line)


def hostile(request):
    """The architect calls a tool named with escapes and writes escapes and
    forged lines; the reviewer's server answers an error made of the same."""
    if request.agent == "architect" and request.offers_tools and not request.tool_results and not \
            request.user.startswith("Coherence check"):
        return Reply(tool_calls=[(EVIL_TOOL, {"text": EVIL, "title": "t"})])
    if request.agent == "reviewer":
        return Reply(status=400, body=json.dumps({"error": {"message": EVIL}}))
    return text(EVIL)


def test_a_reply_full_of_escapes_and_forged_lines_reaches_no_terminal_or_log_raw(fake_llm, workdir):
    fake = fake_llm(responder=hostile)
    topic = {"title": "Escapes", "phases": [{"name": "Only", "rounds": [1, 1]}],
             "coherence_probes": [{"after_round": 1, "question": "What is planned?", "expect": ["plan"]}]}
    (workdir / "escapes.json").write_text(json.dumps(topic))
    code, output = run(workdir, "run", "--topic", "escapes.json", "--endpoint", fake.url,
                       "--agents", "architect,reviewer", "--retries", "0")
    assert code == 0, output
    assert "Plan ready." in output and "\\x1b]0;pwned\\x07" in output  # shown, as readable text
    assert_clean(output, "azclaw run")
    log = (workdir / "logs" / "escapes.log").read_bytes().decode("utf-8", "surrogateescape")
    assert "Plan ready." in log
    assert_clean(log, "logs/escapes.log")
    for args in (["show"], ["show", "--tools"], ["status"]):
        code, output = run(workdir, *args)
        assert code == 0, output
        assert "pwned" in output, (args, output)
        assert_clean(output, f"azclaw {' '.join(args)}")


def test_doctor_lines_carry_no_escape_a_server_sent(fake_llm, workdir):
    fake = fake_llm(models=[{"id": f"model{TITLE}\n{FORGED[0]}"}], default=EVIL)
    code, output = run(workdir, "doctor", "--endpoint", fake.url, "--timeout", "30")
    assert "pwned" in output, output
    assert_clean(output, "azclaw doctor")


def test_an_error_line_carries_no_escape_a_server_sent(fake_llm, workdir):
    fake = fake_llm(script=[Reply(status=401, body=json.dumps({"error": {"message": EVIL}}))])
    code, output = run(workdir, "run", "--task", "x", "--endpoint", fake.url, "--agents", "solo",
                       "--retries", "0", "--max-rounds", "1", "--max-failed-rounds", "1")
    assert code != 0
    assert "pwned" in output, output
    assert_clean(output, "azclaw: error")
