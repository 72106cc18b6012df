"""Path containment, secret refusal and the run_python sandbox."""

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from properties import HealthCheck, given, settings, st  # hypothesis, or a skip without it

from azclaw.tools import sandbox
from azclaw.tools.confine import SandboxLevel, probe_sandbox
from azclaw.errors import ToolError
from helpers import CLI_TIMEOUT


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


def _gone(pid: int, wait: float = CLI_TIMEOUT) -> bool:
    """True once ``pid`` no longer exists (waits for it to be reaped: generously, only a bound against a
    process that never goes)."""
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
    # 10 s: room for two Pythons to start in the sandbox on a busy machine before the limit kills them
    result = sandbox.run_python(code, tmp_path, timeout=10)
    assert "killed after 10s" in result and "started" in result
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


# -- file tools: links swapped in while they open, hard links, more secrets ---

def _tool(name: str, ctx, **args):
    from azclaw.tools.builtin import build_default_registry
    registry = build_default_registry()
    return registry.execute(_Call(name, args), ctx, registry.allowed(True)).content


class _Call:
    def __init__(self, name, arguments):
        self.id, self.name, self.arguments, self.error = "call_1", name, arguments, ""


def _swapper(folder: Path, outside: Path, stop: threading.Event) -> None:
    """Swap ``folder`` for a link to ``outside`` and back, as fast as it can."""
    real = folder.with_name(folder.name + "_real")
    while not stop.is_set():
        try:
            folder.rename(real)
            folder.symlink_to(outside, target_is_directory=True)
            folder.unlink()
            real.rename(folder)
        except OSError:
            pass


def _race(tmp_path, action) -> list[str]:
    from azclaw.tools.registry import ToolContext
    src, out, outside = tmp_path / "src", tmp_path / "out", tmp_path / "outside"
    for folder in (src / "dir", out / "dir", outside):
        folder.mkdir(parents=True)
    (src / "dir" / "notes.txt").write_text("public\n")
    (outside / "notes.txt").write_text("SECRET-OUTSIDE\n")
    ctx = ToolContext("developer", True, out, [src])
    stop = threading.Event()
    swapping = threading.Thread(target=_swapper, args=(src / "dir" if action == "read" else out / "dir", outside,
                                                       stop))
    swapping.start()
    try:
        if action == "read":
            return [_tool("read_file", ctx, path="dir/notes.txt") for _ in range(300)]
        return [_tool("write_file", ctx, path="dir/notes.txt", content=f"written {n}") for n in range(300)]
    finally:
        stop.set()
        swapping.join()


def test_read_file_never_follows_a_link_swapped_in_while_it_opens(tmp_path):
    results = _race(tmp_path, "read")
    assert all(r == "public" or r.startswith("ERROR") for r in results), {r for r in results if "SECRET" in r}


def test_write_file_never_writes_through_a_link_swapped_in_while_it_opens(tmp_path):
    results = _race(tmp_path, "write")
    assert (tmp_path / "outside" / "notes.txt").read_text() == "SECRET-OUTSIDE\n"
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["notes.txt"]
    assert all(r.startswith(("Wrote", "ERROR")) for r in results)


def test_read_file_refuses_a_hard_link_in_the_output_folder(tmp_path):
    from azclaw.tools.registry import ToolContext
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "key").write_text("SECRET-KEY")
    os.link(outside / "key", out / "copy.txt")
    (out / "plain.txt").write_text("fine")
    ctx = ToolContext("developer", True, out, [])
    assert "hard links" in _tool("read_file", ctx, path="copy.txt")
    assert _tool("read_file", ctx, path="plain.txt") == "fine"


@pytest.mark.parametrize("path", ["etc/ssh/ssh_host_ed25519_key", "putty/server.ppk", "service-account.json",
                                  "gcp/service_account_prod.json", "client_secret_1234.apps.json", ".vault-token",
                                  ".config/gh/hosts.yml", "infra/terraform.tfstate", "prod.tfvars",
                                  ".config/gcloud/application_default_credentials.json", ".my.cnf", "deploy_rsa",
                                  ".docker/config.json", "kubeconfig", ".s3cfg", "keystore.jks"])
def test_more_secret_files_are_refused(path):
    assert sandbox.is_secret(Path(path))


@pytest.mark.parametrize("path", ["hosts.yml", "src/keyboard.py", "docs/service.md", "client.json", "README.md"])
def test_ordinary_files_are_not_taken_for_secrets(path):
    assert not sandbox.is_secret(Path(path))


@pytest.mark.parametrize("output, agents, logs", [(".", "agents", "logs"), ("work", "work/agents", "logs"),
                                                  ("logs", "agents", "logs"), ("agents/x", "agents", "logs"),
                                                  ("logs/out", "agents", "logs")])
def test_an_output_folder_overlapping_memories_or_logs_is_refused(tmp_path, output, agents, logs):
    from azclaw.errors import ConfigError
    with pytest.raises(ConfigError, match="overlaps"):
        sandbox.check_output_folder(tmp_path / output, tmp_path / agents, tmp_path / logs)


def test_an_output_folder_beside_memories_and_logs_is_fine(tmp_path):
    sandbox.check_output_folder(tmp_path / "output", tmp_path / "agents", tmp_path / "logs")


def test_the_home_folder_is_refused_as_output(monkeypatch, tmp_path):
    from azclaw.errors import ConfigError
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="home folder"):
        sandbox.check_output_folder(tmp_path, tmp_path / "a" / "agents", tmp_path / "a" / "logs")


# -- approval: the content of a write ----------------------------------------

def test_a_new_file_is_previewed_with_its_content_and_a_changed_one_as_a_diff():
    from azclaw.tools.approval import write_preview
    new = write_preview("app.py", None, "print('hello')\n")
    assert "new file" in new and "print('hello')" in new
    diff = write_preview("app.py", "a = 1\nb = 2\n", "a = 1\nb = 3\n")
    assert "-b = 2" in diff and "+b = 3" in diff and "replaces" in diff
    long = write_preview("big.txt", None, "x" * 10_000, limit=500)
    assert len(long) < 700 and "more characters not shown" in long


def test_the_approver_shows_escape_codes_instead_of_obeying_them():
    import io
    from azclaw.tools.approval import TerminalApprover

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    approver = TerminalApprover(stdin=Terminal("n\n"), stdout=screen)
    assert approver("write_file", "ok.py (new file):\nsafe\x1b[2J\x1b[1Ahidden") is False
    assert "\x1b" not in screen.getvalue() and "\\x1b[2J" in screen.getvalue()


# -- the run: options and the journal -----------------------------------------

def test_run_refuses_an_output_folder_that_holds_the_agents(azclaw, fake_llm):
    from helpers import assert_one_error_line
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--output", ".")
    assert_one_error_line(proc, "output folder .", "agents folder", "--output")
    assert fake.chats == []


def test_unsandboxed_python_is_the_users_choice_and_the_journal_says_so(azclaw, fake_llm, workdir):
    from fakellm import call, text
    from helpers import journal
    fake = fake_llm(per_agent={"developer": [call("run_python", {"code": "print('ran', 6 * 7)"}), text("done")]})
    proc = azclaw("run", "--task", "x", "--name", "task", "--endpoint", fake.url, "--agents", "developer",
                  "--max-rounds", "1", "--unsandboxed-python")
    assert proc.returncode == 0, proc.stderr
    assert fake.chats[1].tool_results == ["[exit code 0]\nran 42\n"]
    start = journal(workdir / "logs" / "task_journal.jsonl")[0]
    assert start["event"] == "run_start" and start["sandbox"].endswith("(unsandboxed by choice)")


def test_a_mistyped_run_python_mode_is_refused_with_the_choices():
    from azclaw import Agent, Orchestrator
    from azclaw.errors import ConfigError
    with pytest.raises(ConfigError, match="sandboxed, bwrap, unsandboxed, off"):
        Orchestrator([Agent("developer", can_write=True)], run_python="sandboxd")


@pytest.mark.parametrize("level, mode, refused", [
    (SandboxLevel(rlimits=("cpu",), problems=("Landlock is not available in this kernel",)), "sandboxed", True),
    (SandboxLevel(landlock=7, rlimits=("cpu",)), "sandboxed", True),  # files confined, network not
    (SandboxLevel(seccomp=True, rlimits=("cpu",)), "sandboxed", True),  # network confined, files not
    (SandboxLevel(rlimits=("cpu",), mode="bwrap", problems=("bwrap is not installed",)), "bwrap", True),
    (SandboxLevel(rlimits=("cpu",), mode="unsandboxed"), "unsandboxed", False),
    (SandboxLevel(landlock=7, seccomp=True, rlimits=("cpu",)), "sandboxed", False),
], ids=["no-landlock", "no-seccomp", "no-landlock-but-seccomp", "bwrap-missing", "users-choice", "confined"])
def test_without_a_verified_os_sandbox_run_python_runs_only_by_the_users_choice(level, mode, refused):
    why = sandbox.refusal(level, mode)
    assert bool(why) == refused
    if refused and mode == "sandboxed":
        assert "--unsandboxed-python" in why and (level.problems[0] if level.problems else "only") in why


# -- source folders that hold secrets -----------------------

def _plant_home(home: Path) -> Path:
    """A fake home folder with a fake key and fake credentials (never real ones)."""
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PLANTED-SSH-KEY")
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text("[default]\naws_secret_access_key = PLANTED-AWS\n")
    return home


@pytest.mark.parametrize("given", ["home", "root", "topic-up-four", "holds-aws"])
def test_a_source_folder_with_secrets_is_refused_in_one_line_naming_it(azclaw, fake_llm, workdir, given):
    from helpers import assert_one_error_line, cli_env
    home = _plant_home(workdir / "home")
    fake = fake_llm()
    base = ["--task", "x", "--endpoint", fake.url, "--max-rounds", "1"]
    if given == "home":
        args, named = [*base, "--source", str(home)], f"source folder {home}:"
    elif given == "root":
        args, named = [*base, "--source", "/"], "source folder /:"
    elif given == "holds-aws":
        project = workdir / "project"
        (project / "deploy" / ".aws").mkdir(parents=True)
        args, named = [*base, "--source", str(project)], str(project / "deploy" / ".aws")
    else:
        topic = home / "a" / "b" / "c" / "d" / "topic.json"
        topic.parent.mkdir(parents=True)
        topic.write_text(json.dumps({"title": "t", "source_dirs": ["../../../../"]}))
        args, named = ["--topic", str(topic), "--endpoint", fake.url, "--max-rounds", "1"], "d/../../../.."
    proc = azclaw("run", *args, env=cli_env(HOME=str(home)))
    assert_one_error_line(proc, named, "--allow-secret-sources")
    assert fake.chats == []


def test_the_override_accepts_the_home_folder_as_a_source(azclaw, fake_llm, workdir):
    from helpers import cli_env
    home = _plant_home(workdir / "home")
    fake = fake_llm()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--max-rounds", "1", "--agents", "developer",
                  "--source", str(home), "--allow-secret-sources", env=cli_env(HOME=str(home)))
    assert proc.returncode == 0, proc.stderr
    assert fake.chats


def test_a_project_with_its_own_git_folder_and_env_file_is_an_ordinary_source(tmp_path):
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / ".env").write_text("API_KEY=x")
    sandbox.check_source_folders([project])  # no error: both stay hidden from agents and their code


def test_the_library_refuses_the_home_folder_as_a_source_unless_allowed(tmp_path, monkeypatch):
    from azclaw import Agent, Orchestrator
    from azclaw.errors import ConfigError
    home = _plant_home(tmp_path / "home")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(ConfigError, match="allow_secret_sources=True"):
        Orchestrator([Agent("developer", can_write=True)], source_dirs=[home])
    Orchestrator([Agent("developer", can_write=True)], source_dirs=[home], allow_secret_sources=True)


def test_the_source_view_grants_clean_parts_whole_and_leaves_secrets_out(tmp_path):
    from azclaw.tools.confine import source_view
    src = tmp_path / "src"
    for folder in ("clean/deep", "mixed/ok", ".git/objects"):
        (src / folder).mkdir(parents=True)
    for name in ("clean/deep/a.py", "mixed/ok/b.py", "mixed/c.py", "mixed/server.pem", ".git/config", "README"):
        (src / name).write_text("x")
    (src / "mixed" / "link").symlink_to(src / ".git" / "config")
    view = source_view([src], sandbox.hidden_from_code)
    assert sorted(view.read) == sorted(str(src / p) for p in ("clean", "mixed/ok", "mixed/c.py", "README"))
    assert sorted(view.listing) == [str(src), str(src / "mixed")]
    assert sorted(view.hidden) == [str(src / ".git"), str(src / "mixed" / "server.pem")]
    small = source_view([src], sandbox.hidden_from_code, budget=2)
    assert small.unchecked and not any(p in small.read for p in small.unchecked)


MODES = ["sandboxed", pytest.param("bwrap", marks=pytest.mark.skipif(
    not probe_sandbox("bwrap").confined, reason="bubblewrap does not work here (apt-get install bubblewrap)"))]
needs_sandbox = pytest.mark.skipif(not probe_sandbox().confined, reason="no operating-system sandbox here")


def _needs_quota(mode: str) -> None:
    if not probe_sandbox(mode).quota:
        pytest.skip("no write quota here: the kernel refused the call's mount namespace or overlay")


@needs_sandbox
@pytest.mark.parametrize("mode", MODES)
def test_code_cannot_read_the_secrets_of_a_source_folder(tmp_path, mode):
    home = _plant_home(tmp_path / "home")
    (home / "project").mkdir()
    (home / "project" / ".env").write_text("PLANTED-ENV")
    (home / "project" / "notes.txt").write_text("ordinary notes")
    code = ("import os\nfor p in ('.ssh/id_rsa', '.aws/credentials', 'project/.env', 'project/notes.txt'):\n"
            f"    try:\n        print(p, open(os.path.join({str(home)!r}, p)).read())\n"
            "    except OSError as exc:\n        print(p, 'REFUSED', exc.strerror)\n")
    result = sandbox.run_python(code, tmp_path / "output", mode=mode, sources=[home])
    assert "PLANTED" not in result, result
    assert result.count("REFUSED") == 3 and "ordinary notes" in result


# -- no setuid file, no root ---------------------------------

_SETUID = """
import os, shutil, stat
print('euid', os.geteuid())
shutil.copy('/bin/sh', 'suidsh')
for how, act in (('chmod', lambda: os.chmod('suidsh', 0o4755)),
                 ('setgid', lambda: os.chmod('suidsh', 0o2755)),
                 ('open', lambda: os.close(os.open('suid2', os.O_CREAT | os.O_WRONLY, 0o4755))),
                 ('mknod', lambda: os.mknod('suid3', stat.S_IFREG | 0o4755)),
                 ('copy2', lambda: shutil.copy2('/bin/su' if os.path.exists('/bin/su') else '/bin/mount', 'suid4'))):
    try:
        act()
        bits = [n for n in os.listdir('.') if os.lstat(n).st_mode & 0o6000]
        print(how, 'ESCAPED' if bits else 'no bit', bits)
    except OSError as exc:
        print(how, 'REFUSED', exc)
"""


@needs_sandbox
@pytest.mark.parametrize("mode", MODES)
def test_code_leaves_no_setuid_file_and_never_runs_as_root(tmp_path, mode):
    output = tmp_path / "output"
    result = sandbox.run_python(_SETUID, output, mode=mode)
    assert "ESCAPED" not in result and "chmod REFUSED" in result and "open REFUSED" in result, result
    assert [p for p in output.rglob("*") if p.is_file() and p.lstat().st_mode & 0o6000] == []
    if probe_sandbox(mode).uid == 0:
        pytest.skip("no idmapped mounts here: the code runs as root without capabilities (azclaw doctor warns)")
    euid = int(result.split("euid ")[1].split()[0])
    assert euid != 0, result
    privileged = [p for p in output.rglob("*") if p.is_file() and p.lstat().st_mode & 0o6000]
    assert privileged == []
    if os.geteuid() == 0:  # what the code wrote stays usable: azclaw's own
        assert (output / "suidsh").stat().st_uid == 0


@needs_sandbox
def test_a_setuid_file_in_the_output_is_stripped_after_the_call_and_named(tmp_path):
    output, outside = tmp_path / "output", tmp_path / "system"
    output.mkdir()
    outside.mkdir()
    (output / "found").write_bytes(b"#!/bin/sh\n")
    os.chmod(output / "found", 0o4755)
    (outside / "program").write_bytes(b"#!/bin/sh\n")
    os.chmod(outside / "program", 0o4755)
    os.link(outside / "program", output / "linked")  # a system program's hard link: never chmod it
    result = sandbox.run_python("print('hi')", output)
    assert "setuid/setgid bits removed" in result and "found" in result and "linked" in result
    assert (output / "found").stat().st_mode & 0o7777 == 0o755
    assert not (output / "linked").exists() and (outside / "program").stat().st_mode & 0o4000


# -- a quota per call ----------------------------------------

BIG_FILES = ("import os\ntry:\n    for i in range(10):\n        with open(f'big{i}', 'wb') as f:\n"
             "            for _ in range(50):\n                f.write(b'x' * (1 << 20))\n    print('ESCAPED')\n"
             "except OSError as exc:\n    print('REFUSED', exc)\n")
MANY_FILES = ("import os\nos.mkdir('many')\ntry:\n    for i in range(20000):\n        open(f'many/{i}', 'w').close()\n"
              "    print('ESCAPED')\nexcept OSError as exc:\n    print('REFUSED after', i, exc)\n")


@needs_sandbox
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code, said", [(BIG_FILES, "No space left on device"), (MANY_FILES, "REFUSED after")],
                         ids=["500 MB", "20000 files"])
def test_writing_past_the_quota_in_one_call_is_refused(tmp_path, mode, code, said):
    _needs_quota(mode)
    output = tmp_path / "output"
    result = sandbox.run_python(code, output, mode=mode)
    assert "REFUSED" in result and said in result and "whole write quota" in result, result
    written = [p for p in output.rglob("*")]
    assert sum(p.stat().st_size for p in written if p.is_file()) <= sandbox.PYTHON_QUOTA_BYTES
    assert len(written) <= sandbox.PYTHON_QUOTA_FILES


@needs_sandbox
def test_temporary_files_count_against_the_same_quota(tmp_path):
    _needs_quota("sandboxed")
    code = ("import os, tempfile\nkeep = []\ntry:\n    for _ in range(6):\n        f = tempfile.TemporaryFile()\n"
            "        keep.append(f)\n        for _ in range(50):\n            f.write(b'x' * (1 << 20))\n"
            "    print('ESCAPED')\nexcept OSError as exc:\n    print('REFUSED', exc)\n")
    result = sandbox.run_python(code, tmp_path / "output")
    assert "REFUSED" in result and "No space left on device" in result, result


@needs_sandbox
@pytest.mark.parametrize("mode", MODES)
def test_what_the_code_changes_in_the_output_comes_back_through_no_link(tmp_path, mode):
    output, outside = tmp_path / "output", tmp_path / "outside"
    (output / "old").mkdir(parents=True)
    (output / "old" / "a.txt").write_text("a")
    (output / "keep.txt").write_text("keep")
    (output / "gone.txt").write_text("gone")
    outside.mkdir()
    (outside / "target.txt").write_text("untouched")
    (output / "file_link").symlink_to(outside / "target.txt")
    (output / "dir_link").symlink_to(outside)
    stamp = 1_500_000_000
    code = ("import os, shutil\n"
            "open('keep.txt', 'a').write(' more')\nos.remove('gone.txt')\nshutil.rmtree('old')\n"
            "open('old', 'w').write('now a file')\n"
            "try:\n    open('file_link', 'w').write('through the link')\n"
            "except OSError as exc:\n    print('REFUSED', exc)\n"
            "os.remove('file_link')\nopen('file_link', 'w').write('a plain file now')\n"
            "os.remove('dir_link')\nos.mkdir('dir_link')\nopen('dir_link/target.txt', 'w').write('inside')\n"
            "os.makedirs('new/deep')\nopen('new/deep/n.txt', 'w').write('n')\n"
            f"os.utime('new/deep/n.txt', ({stamp}, {stamp}))\n")
    result = sandbox.run_python(code, output, mode=mode)
    assert "exit code 0" in result and "REFUSED" in result, result
    assert (outside / "target.txt").read_text() == "untouched" and sorted(os.listdir(outside)) == ["target.txt"]
    assert (output / "keep.txt").read_text() == "keep more" and not (output / "gone.txt").exists()
    assert (output / "old").read_text() == "now a file"
    assert not (output / "file_link").is_symlink() and (output / "file_link").read_text() == "a plain file now"
    assert not (output / "dir_link").is_symlink() and (output / "dir_link" / "target.txt").read_text() == "inside"
    assert (output / "new" / "deep" / "n.txt").stat().st_mtime == stamp


@needs_sandbox
@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: then the code runs as a uid of its own")
@pytest.mark.parametrize("mode", MODES)
def test_processes_of_other_users_cannot_reach_into_the_running_code(tmp_path, mode):
    """nobody's processes (any daemon) must not read root's files or write the
    output through /proc/<pid>/root and cwd of the code (its uid is its own)."""
    import pwd
    import subprocess
    import threading
    from helpers import wait_for
    if probe_sandbox(mode).uid in (0, -1):
        pytest.skip("no idmapped mounts here: the code runs as root without capabilities")
    src = tmp_path / "src"
    src.mkdir(mode=0o700)
    (src / "root-only.txt").write_text("ROOT-ONLY-CONTENT")
    os.chmod(src / "root-only.txt", 0o600)
    marker = f"azclaw-reach-{os.getpid()}-{mode}"
    code = f"# {marker}\nimport time\nopen('started', 'w').close()\ntime.sleep(30)\n"
    done: list[str] = []
    call = threading.Thread(target=lambda: done.append(sandbox.run_python(code, tmp_path / "output", timeout=10,
                                                                         mode=mode, sources=[src])))
    call.start()
    found: list[int] = []

    def running() -> bool:
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
                    return (entry / "cwd" / "started").exists()
            except OSError:
                continue
        return False
    wait_for(running, timeout=60, what="the code running")  # generous: a busy machine
    pid = found[-1]
    uid = os.stat(f"/proc/{pid}").st_uid
    assert uid not in (0, 65534)
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)  # no account has it
    nobody = {"user": 65534, "group": 65534, "capture_output": True, "text": True, "check": False}
    read = subprocess.run(["/bin/cat", f"/proc/{pid}/root{src}/root-only.txt"], **nobody)
    write = subprocess.run(["/bin/sh", "-c", f"echo planted > /proc/{pid}/cwd/planted"], **nobody)
    call.join()
    assert "ROOT-ONLY-CONTENT" not in read.stdout and read.returncode != 0
    assert write.returncode != 0 and not (tmp_path / "output" / "planted").exists(), done


@needs_sandbox
def test_folders_nested_deeper_than_the_copy_back_goes_are_named_and_the_run_goes_on(tmp_path):
    _needs_quota("sandboxed")
    code = ("import os\nfor i in range(600):\n    os.mkdir('d')\n    os.chdir('d')\n"
            "open('bottom.txt', 'w').write('deep')\nprint('nested')\n")
    result = sandbox.run_python(code, tmp_path / "output")
    assert "nested" in result and "folders deep, not copied back" in result, result
    assert (tmp_path / "output" / "d").is_dir()
