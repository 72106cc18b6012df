"""Path containment, secret refusal and the run_python sandbox."""

import os
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azclaw import sandbox
from azclaw.errors import ToolError


@pytest.fixture
def tree(tmp_path):
    """sources/ and output/ inside tmp_path, a secret outside, and links that lead out."""
    src, out, outside = tmp_path / "sources", tmp_path / "output", tmp_path / "outside"
    for d in (src / "pkg", out, outside, src / ".git", src / ".ssh"):
        d.mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("print('hi')\n")
    (outside / "secret.txt").write_text("TOP-SECRET-OUTSIDE")
    (src / ".env").write_text("API_KEY=leak")
    (src / "pkg" / "id_rsa").write_text("KEY")
    (src / "server.pem").write_text("KEY")
    (src / ".git" / "config").write_text("[core]")
    (src / ".ssh" / "known_hosts").write_text("x")
    (src / "link_out").symlink_to(outside)
    (src / "file_link_out").symlink_to(outside / "secret.txt")
    (src / "link_in").symlink_to(src / "pkg")
    return src, out, outside


@pytest.mark.parametrize("path", [
    "../outside/secret.txt", "pkg/../../outside/secret.txt", "/etc/passwd", "~/.bashrc",
    "link_out/secret.txt", "file_link_out", "link_out", str(Path("/") / "tmp"),
])
def test_paths_that_lead_outside_are_refused(tree, path):
    src, out, _ = tree
    with pytest.raises(ToolError):
        sandbox.resolve_inside(path, [src, out])


@pytest.mark.parametrize("path", [".env", "pkg/id_rsa", "server.pem", ".git/config", ".ssh/known_hosts",
                                  "pkg/../.env", "link_in/id_rsa"])
def test_secrets_are_refused_wherever_they_are(tree, path):
    src, out, _ = tree
    with pytest.raises(ToolError, match="secrets"):
        sandbox.resolve_inside(path, [src, out])


@pytest.mark.parametrize("path", ["pkg/mod.py", "./pkg/mod.py", "link_in/mod.py", "pkg"])
def test_ordinary_paths_inside_resolve(tree, path):
    src, out, _ = tree
    real = sandbox.resolve_inside(path, [src, out])
    assert real.exists() and src.resolve() in real.parents


_segment = st.sampled_from(["..", ".", "pkg", "mod.py", "link_out", "link_in", "file_link_out", ".env",
                            ".git", "config", "outside", "secret.txt", "id_rsa", "", "~", "/", "a b", "\x00"])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_segment, min_size=1, max_size=7), st.booleans())
def test_no_generated_path_escapes_or_reaches_a_secret(tree, segments, must_exist):
    src, out, outside = tree
    path = "/".join(segments)
    try:
        real = sandbox.resolve_inside(path, [src, out], must_exist=must_exist)
    except ToolError:
        return
    root = next(r.resolve() for r in (src, out) if real == r.resolve() or r.resolve() in real.parents)
    assert not sandbox.is_secret(real.relative_to(root))
    assert outside.resolve() not in real.parents and real != outside.resolve()


def test_run_python_output_and_exit_code(tmp_path):
    result = sandbox.run_python("import os; print(os.getcwd()); raise SystemExit(3)", tmp_path)
    assert "exit code 3" in result and str(tmp_path) in result


def test_run_python_does_not_see_keys_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-should-not-leak")
    result = sandbox.run_python("import os; print(sorted(os.environ))", tmp_path)
    assert "OPENAI_API_KEY" not in result and "GITHUB_TOKEN" not in result


def _gone(pid: int, wait: float = 10.0) -> bool:
    """True once ``pid`` no longer exists (waits up to ``wait`` seconds for it to be reaped)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


# the sleeper writes its own number as /proc knows it: inside a PID namespace
# its os.getpid() means nothing to the test
_SLEEPER = ("import os, time; open('child.pid.tmp', 'w').write(os.readlink('/proc/self')); "
            "os.rename('child.pid.tmp', 'child.pid'); time.sleep(60)")


def test_run_python_is_killed_at_the_time_limit_with_its_children(tmp_path):
    code = ("import os, subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-c', {_SLEEPER!r}])\n"
            "while not os.path.exists('child.pid'): time.sleep(0.01)\n"
            "print('started', flush=True); time.sleep(60)")
    result = sandbox.run_python(code, tmp_path, timeout=5)
    assert "killed after 5s" in result and "started" in result
    assert _gone(int((tmp_path / "child.pid").read_text())), "the child of the timed-out code is still alive"


def test_run_python_output_is_cut(tmp_path):
    result = sandbox.run_python("print('x' * 50000)", tmp_path, output_limit=1000)
    assert len(result) < 1200 and "more characters cut" in result


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_run_python_memory_is_limited(tmp_path):
    result = sandbox.run_python("b = bytearray(3 * 1024 ** 3); print('allocated')", tmp_path)
    assert "allocated" not in result and "MemoryError" in result


def test_run_python_leaves_no_background_process_behind(tmp_path):
    code = ("import os, subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-c', {_SLEEPER!r}],\n"
            "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "while not os.path.exists('child.pid'): time.sleep(0.01)")
    result = sandbox.run_python(code, tmp_path)
    assert "exit code 0" in result
    assert _gone(int((tmp_path / "child.pid").read_text())), "a process started by run_python outlived the call"


@pytest.mark.parametrize("name, value", [
    ("DATABASE_URL", "postgres://app:hunter2-should-not-leak@db:5432/app"),
    ("DB_PASS", "hunter2-should-not-leak"),
    ("SENTRY_DSN", "https://hunter2-should-not-leak@o1.ingest.sentry.io/1"),
    ("GITHUB_PAT", "hunter2-should-not-leak"),
    ("CI_JOB_JWT", "hunter2-should-not-leak"),
    ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/hunter2-should-not-leak"),
    ("AZCLAW_HARMLESS", "hunter2-should-not-leak"),
], ids=["url-password", "pass", "dsn", "pat", "jwt", "webhook", "any-other-name"])  # ids: PYTEST_CURRENT_TEST holds them
def test_run_python_sees_only_an_allow_list_of_the_environment(tmp_path, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("TZ", "Europe/Vienna")
    result = sandbox.run_python("import os; print(dict(os.environ))", tmp_path)
    assert "hunter2" not in result and name not in result and "Europe/Vienna" in result


@pytest.mark.parametrize("path", [".GIT/config", ".Ssh/id_ed25519", "sub/.AWS/credentials"])
def test_secret_folders_are_refused_in_any_letter_case(tmp_path, path):
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text("PLANTED")
    with pytest.raises(ToolError, match="secrets"):
        sandbox.resolve_inside(path, [tmp_path])
