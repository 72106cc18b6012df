"""Reading a run's journal back: nothing a journal holds makes a reader
crash, hang or grow without bound (status, show, report, --resume)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from azclaw.runlog.journal import Journal
from fakellm import Reply, call, text
from helpers import CLI_TIMEOUT, cli_env, run_file


def completion_with_call(name_json: str, arguments_json: str) -> str:
    """A chat completion whose one tool call's name and arguments are raw JSON text (escapes kept)."""
    return ('{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls", '
            '"message": {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", '
            f'"function": {{"name": {name_json}, "arguments": {arguments_json}}}}}]}}}}], '
            '"usage": {"prompt_tokens": 10, "completion_tokens": 5}}')


def test_lone_surrogates_from_a_model_leave_a_valid_journal_that_every_reader_prints(fake_llm, azclaw, workdir):
    body = completion_with_call('"rec\\ud800all"', '"{\\"query\\": \\"x\\\\udfffy\\"}"')
    fake = fake_llm(per_agent={"solo": [Reply(body=body), call("recall", {"query": "a\ud800b"}), text("done")]})
    run = azclaw("run", "--task", "T", "--agents", "solo", "--endpoint", fake.url, "--max-rounds", "1", "--quiet")
    assert run.returncode == 0, run.stderr
    raw = run_file(workdir / "logs", "_journal.jsonl").read_bytes()
    decoded = raw.decode("utf-8")  # strict: every line is valid UTF-8
    assert not any("\ud800" <= ch <= "\udfff" for ch in decoded)
    for command in (("show", "--tools"), ("report",), ("status",), ("status", "--json")):
        result = azclaw(*command)
        assert result.returncode == 0, (command, result.stderr)
        result.stdout.encode("utf-8")


def test_a_journal_with_a_byte_that_is_not_utf8_still_resumes_and_reads(fake_llm, azclaw, workdir):
    fake = fake_llm()
    args = ("run", "--task", "T", "--agents", "solo", "--endpoint", fake.url, "--quiet")
    assert azclaw(*args, "--max-rounds", "2").returncode == 0
    path = run_file(workdir / "logs", "_journal.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(3, b'{"v": 4, "event": "warning", "message": "\xff broken"}\n')  # one byte that is not UTF-8
    path.write_bytes(b"".join(lines))
    for command in (("status",), ("report",), ("show",)):
        result = azclaw(*command)
        assert result.returncode == 0, (command, result.stderr)
    resumed = azclaw(*args, "--max-rounds", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [r.round for r in fake.chats] == [1, 2, 3]


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_journal_that_is_not_a_regular_file_is_one_error_line(azclaw, workdir, kind):
    logs = workdir / "logs"
    logs.mkdir()
    path = logs / "t_journal.jsonl"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would wait forever for a writer
    elif kind == "device":
        path.symlink_to("/dev/zero")  # reading it would never end
    else:
        path.mkdir()
    for command in (("status", "--log-dir", str(path)), ("show", "--log-dir", str(path)),
                    ("report", "--log-dir", str(path))):
        result = azclaw(*command)  # bounded by CLI_TIMEOUT: a hang fails the test instead of blocking the suite
        assert result.returncode == 1, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("azclaw: error: ") and str(path) in lines[0], result.stderr


def big_journal(path, rounds: int = 40, agents=("architect", "developer", "reviewer"), reply_chars: int = 400_000):
    """A journal like an 80-round run with large replies: about rounds x agents x reply_chars bytes."""
    journal = Journal(path)
    journal.write("run_start", topic=path.name.split("_journal")[0], title="Big", first_round=1,
                  last_round=rounds, agents=list(agents), resumed_from=None, pid=None, host="elsewhere")
    filler = ("All work and no play makes the agent a dull model. " * (reply_chars // 50))[:reply_chars]
    for r in range(1, rounds + 1):
        for a in agents:
            journal.write("turn_start", round=r, agent=a)
            journal.write("turn", round=r, agent=a, text=f"round {r} {a}: {filler}", prompt_tokens=900,
                          completion_tokens=300, seconds=1.5, requests=1,
                          calls=[{"tool": "write_file", "arguments": filler[:2000], "result": "Wrote", "ok": True,
                                  "effect": {"kind": "file", "target": f"f{r}.py", "status": "created"}}])
        journal.write("round_end", round=r)
    journal.write("run_end", round=rounds, reason="max_rounds", detail="", stats={})
    return path


def peak_rss_mb(*args, cwd) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``python -m azclaw ARGS`` and return it with its peak resident memory in MB."""
    # VmHWM is this process's own peak (ru_maxrss can carry the forking parent's size over exec)
    code = ("import runpy, sys; sys.argv = ['azclaw'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('azclaw', run_name='__main__')\n"
            "finally:\n    peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "    print('PEAK', peak, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=cli_env(), capture_output=True,
                            text=True, timeout=CLI_TIMEOUT)
    peak = next(int(line.split()[1]) for line in result.stderr.splitlines() if line.startswith("PEAK"))
    return result, peak / 1024


def test_post_run_commands_read_a_large_journal_in_bounded_memory(workdir):
    (workdir / "logs").mkdir()
    path = big_journal(workdir / "logs" / "big_journal.jsonl")
    size_mb = path.stat().st_size / 2**20
    assert size_mb > 45
    peaks = {}
    for command in (("status",), ("show", "--tools"), ("report", "--charts", "svg")):
        result, peaks[command[0]] = peak_rss_mb(*command, cwd=workdir)
        assert result.returncode == 0 or "SystemExit" in result.stderr, result.stderr[-2000:]
    # the journal is read as a stream: memory stays below the journal's size, whatever that is (a Python
    # process is ~40 MB; the report holds the newest rounds' texts, about 4 MB, a few times while it renders)
    assert peaks["status"] < 80 and peaks["show"] < 80 and peaks["report"] < 160, (size_mb, peaks)
    page = (workdir / "logs" / "big_report.html").stat().st_size / 2**20
    assert page < 30, page  # the transcript keeps the newest rounds in full and points to `azclaw show` for older
    assert "azclaw show --round 1 --agent architect" in (workdir / "logs" / "big_report.html").read_text()


def test_a_journal_path_taken_by_a_pipe_is_one_error_line_and_by_a_link_writes_nothing_elsewhere(
        fake_llm, azclaw, workdir):
    fake = fake_llm()
    logs = workdir / "logs"
    logs.mkdir()
    os.mkfifo(logs / "solo_journal.jsonl")  # opening it would wait for a writer or a reader forever
    args = ("run", "--task", "T", "--name", "solo", "--agents", "solo", "--endpoint", fake.url, "--max-rounds", "1")
    for extra in ((), ("--resume",)):
        run = azclaw(*args, *extra)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 1 and len(lines) == 1 and "logs/solo_journal.jsonl" in lines[0], run.stderr
    assert fake.chats == []
    (logs / "solo_journal.jsonl").unlink()
    target = workdir / "elsewhere.txt"
    target.write_text("keep me\n")
    (logs / "solo_journal.jsonl").symlink_to(target)  # appending through it would write into its target
    run = azclaw(*args)
    assert run.returncode == 0, run.stderr
    assert target.read_text() == "keep me\n"  # the link was moved aside as an old journal, never written through
    assert not (logs / "solo_journal.jsonl").is_symlink()
