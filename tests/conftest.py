"""Shared fixtures: the scripted OpenAI-compatible server, a private working
folder per test, and the real ``azclaw`` command as a subprocess."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fakellm import FakeLLM
from helpers import CLI_TIMEOUT, ENV_VARS, cli_env


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch) -> Path:
    """Every test runs in its own folder, so ./agents ./output ./logs and
    ./STOP land there; azclaw's environment variables start unset."""
    monkeypatch.chdir(tmp_path)
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def fake_llm():
    """Factory: ``fake_llm(script=..., per_agent=..., responder=...)`` starts a
    FakeLLM on 127.0.0.1; every server started is stopped after the test."""
    started: list[FakeLLM] = []

    def make(**kwargs) -> FakeLLM:
        fake = FakeLLM(**kwargs).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/chat/completions"


@pytest.fixture
def azclaw(workdir):
    """Run the real command: ``azclaw("run", "--task", ...)`` in the test's
    folder; returns the CompletedProcess (text output)."""
    def run(*args: str, timeout: float = CLI_TIMEOUT, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "azclaw", *args], cwd=workdir, env=env or cli_env(),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return run


@pytest.fixture
def azclaw_popen(workdir):
    """Start the real command without waiting; stdout/stderr go to files in
    the test folder (``out.txt``, ``err.txt``). Processes are killed at teardown."""
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        n = len(procs)
        proc = subprocess.Popen([sys.executable, "-m", "azclaw", *args], cwd=workdir, env=cli_env(),
                                stdin=subprocess.DEVNULL,
                                stdout=open(workdir / f"out{n}.txt", "w"),
                                stderr=open(workdir / f"err{n}.txt", "w"))
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=CLI_TIMEOUT)


@pytest.fixture
def agentazall():
    """The ``agentazall`` command installed beside this Python."""
    script = Path(sys.executable).parent / "agentazall"
    found = str(script) if script.exists() else shutil.which("agentazall")
    assert found, "the agentazall console script is not installed beside sys.executable"

    def run(root: str | Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([found, *args], env=cli_env(AGENTAZALL_ROOT=str(root)), capture_output=True,
                              text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)
    return run
