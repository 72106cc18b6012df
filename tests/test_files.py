"""Run files (azclaw/files.py): read only when they are regular files, never
more than a bound, so a named pipe cannot hang a run and a link to
``/dev/zero`` cannot fill the machine's memory; the run's lock is a file of
its own."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from azclaw.errors import ConfigError, StorageError
from azclaw.files import RunLock, open_regular, read_json, read_regular
from helpers import CLI_TIMEOUT, assert_one_error_line, cli_env

MEMORY_LIMIT = 2_000_000_000  # bytes of address space for a process that meets /dev/zero: a runaway read dies


def limited_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def azclaw_limited(workdir, *args: str) -> subprocess.CompletedProcess:
    """The real command with its memory bounded, for tests that put /dev/zero in its way."""
    return subprocess.run([sys.executable, "-m", "azclaw", *args], cwd=workdir, env=cli_env(), text=True,
                          capture_output=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
                          preexec_fn=limited_memory)


def test_a_regular_file_is_read_whole_up_to_its_bound(tmp_path):
    path = tmp_path / "f.json"
    path.write_bytes(b"x" * 100)
    assert read_regular(path, "checkpoint", 100) == b"x" * 100
    with pytest.raises(StorageError, match=r"f.json: checkpoint is larger than 99 bytes"):
        read_regular(path, "checkpoint", 99)


@pytest.mark.parametrize("make, kind", [
    (lambda p: os.mkfifo(p), "a named pipe"),
    (lambda p: os.mkdir(p), "a folder"),
    (lambda p: os.symlink("/dev/null", p), "a device"),
])
def test_anything_but_a_regular_file_is_one_error_naming_it_and_never_blocks(tmp_path, make, kind):
    path = tmp_path / "checkpoint.json"
    make(path)
    with pytest.raises(ConfigError, match=f"checkpoint.json: is {kind}.*, not a checkpoint"):
        read_regular(path, "checkpoint", 1000, ConfigError)
    with pytest.raises(ConfigError, match=f"is {kind}.*, not a checkpoint"):
        read_json(path, "checkpoint", ConfigError)


def test_a_file_read_in_pieces_is_opened_only_when_regular(tmp_path):
    (tmp_path / "j.jsonl").write_text('{"event": "run_start"}\n')
    with open_regular(tmp_path / "j.jsonl", "journal") as fh:
        assert fh.readline() == b'{"event": "run_start"}\n'
    os.mkfifo(tmp_path / "fifo.jsonl")
    with pytest.raises(StorageError, match="fifo.jsonl: is a named pipe .*, not a journal"):
        open_regular(tmp_path / "fifo.jsonl", "journal")


def test_a_link_is_refused_when_links_are_not_followed_and_a_missing_file_is_named(tmp_path):
    (tmp_path / "real").write_text("{}")
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert read_regular(tmp_path / "link", "lock", 10) == b"{}"
    with pytest.raises(StorageError, match="link: is a symbolic link, not a lock"):
        read_regular(tmp_path / "link", "lock", 10, follow=False)
    with pytest.raises(StorageError, match="gone: lock not found"):
        read_regular(tmp_path / "gone", "lock", 10)


@pytest.mark.parametrize("make, kind", [
    (lambda p: os.mkfifo(p), "a named pipe"),
    (lambda p: os.symlink(p.parent / "victim.txt", p), "a symbolic link"),
])
def test_a_lock_that_is_a_pipe_or_a_link_is_refused_and_its_target_left_whole(tmp_path, make, kind):
    (tmp_path / "victim.txt").write_text("precious\n")
    path = tmp_path / "run.lock"
    make(path)
    with pytest.raises(StorageError, match=f"run.lock: .*{kind}"):
        RunLock(path, "topic 't'").acquire()
    assert (tmp_path / "victim.txt").read_text() == "precious\n"


# -- through the command --------------------------------------------------------

def test_resume_from_a_checkpoint_that_is_a_named_pipe_is_one_error_line_not_a_hang(fake_llm, azclaw, workdir):
    fake = fake_llm()
    (workdir / "logs").mkdir()
    os.mkfifo(workdir / "logs" / "t_checkpoint.json")
    proc = azclaw("run", "--task", "x", "--name", "t", "--endpoint", fake.url, "--resume")
    assert_one_error_line(proc, "t_checkpoint.json", "named pipe")
    assert fake.chats == []


def test_resume_from_a_checkpoint_linked_to_dev_zero_is_one_error_line_in_bounded_memory(fake_llm, workdir):
    fake = fake_llm()
    (workdir / "logs").mkdir()
    os.symlink("/dev/zero", workdir / "logs" / "t_checkpoint.json")
    proc = azclaw_limited(workdir, "run", "--task", "x", "--name", "t", "--endpoint", fake.url, "--resume")
    assert_one_error_line(proc, "t_checkpoint.json", "is a device, not a checkpoint")
    explicit = azclaw_limited(workdir, "run", "--task", "x", "--endpoint", fake.url, "--resume", "/dev/zero")
    assert_one_error_line(explicit, "/dev/zero", "is a device")
    assert fake.chats == []


@pytest.mark.parametrize("option, name", [("--topic", "topic.json"), ("--team", "team.json"),
                                          ("--mcp", "servers.json")])
def test_a_topic_team_or_mcp_file_that_is_a_pipe_or_dev_zero_is_one_error_line(fake_llm, workdir, option, name):
    fake = fake_llm()
    os.mkfifo(workdir / name)
    task = [] if option == "--topic" else ["--task", "x"]
    proc = azclaw_limited(workdir, "run", *task, option, name, "--endpoint", fake.url)
    assert_one_error_line(proc, name, "named pipe")
    os.unlink(workdir / name)
    os.symlink("/dev/zero", workdir / name)
    proc = azclaw_limited(workdir, "run", *task, option, name, "--endpoint", fake.url)
    assert_one_error_line(proc, name, "is a device")
    assert fake.chats == []


def test_a_lock_file_linked_elsewhere_is_one_error_line_and_the_target_is_untouched(fake_llm, azclaw, workdir):
    fake = fake_llm()
    (workdir / "logs").mkdir()
    (workdir / "notes.txt").write_text("my notes\n")
    os.symlink(workdir / "notes.txt", workdir / "logs" / "t.lock")
    proc = azclaw("run", "--task", "x", "--name", "t", "--endpoint", fake.url, "--max-rounds", "1")
    assert_one_error_line(proc, "t.lock", "symbolic link")
    assert (workdir / "notes.txt").read_text() == "my notes\n"


@pytest.mark.parametrize("make, kind", [
    (lambda p: os.mkfifo(p), "named pipe"),
    (lambda p: os.symlink(p.parent.parent / "notes.txt", p), "symbolic link"),
])
def test_a_run_log_that_is_a_pipe_or_a_link_is_one_error_line_not_a_hang_or_a_write_elsewhere(
        fake_llm, azclaw, workdir, make, kind):
    fake = fake_llm()
    (workdir / "logs").mkdir()
    (workdir / "notes.txt").write_text("my notes\n")
    make(workdir / "logs" / "t.log")
    proc = azclaw("run", "--task", "x", "--name", "t", "--endpoint", fake.url, "--max-rounds", "1")
    assert_one_error_line(proc, "t.log", kind)
    assert (workdir / "notes.txt").read_text() == "my notes\n" and fake.chats == []
