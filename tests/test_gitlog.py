"""--git: each round that changed the output folder is one commit, authored
by the agents that wrote; the repository stays out of the agents' reach and
nothing a model writes makes git run anything or commit anything from outside."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from azclaw.events import RoundFinished, TurnStarted
from azclaw.tools.confine import probe_sandbox
from fakellm import Reply, call, calls, text
from helpers import assert_one_error_line, fast_clients, journal, orchestrator, team, wait_for

GIT = shutil.which("git")  # found before any test changes PATH
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")

SANDBOXED = probe_sandbox().confined


def git(*args: str, cwd: Path, check: bool = True) -> str:
    """git as a person runs it, with no configuration of this machine's."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent-home", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "LC_ALL": "C"}
    proc = subprocess.run([GIT, *args], cwd=cwd, env=env, capture_output=True, text=True, errors="replace")
    assert proc.returncode == 0 or not check, proc.stderr
    return proc.stdout


def history(logs: Path, topic: str = "t") -> list[dict]:
    """The commits of a run's repository, oldest first: subject, author, committer, body, files."""
    git_dir = f"--git-dir={logs / (topic + '.git')}"
    out = git(git_dir, "log", "--reverse", "--format=%H%x00%an <%ae>%x00%cn <%ce>%x00%B%x01",
              cwd=logs)
    commits = []
    for record in out.split("\x01"):
        if not record.strip():
            continue
        sha, author, committer, body = record.strip("\n").split("\x00")
        files = git(git_dir, "ls-tree", "-r", "--name-only", "--full-tree", sha, cwd=logs).splitlines()
        commits.append({"sha": sha, "subject": body.splitlines()[0], "author": author, "committer": committer,
                        "body": body, "files": files})
    return commits


def run_library(fake, rounds: int, writers=("developer",), names=("developer", "tester"), **kw):
    orch = orchestrator(team(fake.url, *names, writers=writers), client_factory=fast_clients, git=True, **kw)
    orch.set_task("build it", "t")
    orch.run(max_rounds=rounds)
    return orch


# -- commits ----------------------------------------------------------------------

def test_each_round_that_changed_files_is_one_commit_and_no_other_round_makes_one(fake_llm, workdir):
    fake = fake_llm(per_agent={"developer": [
        call("write_file", {"path": "app.py", "content": "print(1)\n"}), text("Wrote app.py."),
        text("Nothing to write this round."),
        call("write_file", {"path": "app.py", "content": "print(1)\n"}), text("Wrote app.py again, same text."),
        text("Only looked."),
        call("write_file", {"path": "app.py", "content": "print(2)\n"}), text("Changed app.py.")]})

    def rewrite_same_bytes(event):  # code rewriting a file with what it held: new times, same bytes
        if isinstance(event, TurnStarted) and event.round == 4:
            (workdir / "output" / "app.py").write_text("print(1)\n")
    run_library(fake, 5, names=("developer",), observers=[rewrite_same_bytes])
    commits = history(workdir / "logs")
    assert [c["subject"] for c in commits] == ["round 1: Wrote app.py.", "round 5: Changed app.py."]
    assert git("--git-dir=logs/t.git", "show", "HEAD:app.py", cwd=workdir) == "print(2)\n"


def test_a_commit_is_authored_by_the_first_writer_with_the_others_as_co_authors(fake_llm, workdir):
    fake = fake_llm(per_agent={
        "architect": [text("Plan: a \x1b[2J\x1b]0;pwned\x07CLI\u202e with\x00 two files.\nSecond line.")],
        "developer": [call("write_file", {"path": "cli.py", "content": "import sys\n"}), text("Wrote cli.py.")],
        "tester": [call("write_file", {"path": "test_cli.py", "content": "import cli\n"}),
                   text("Wrote the test.\n\nIt imports cli.")]})
    run_library(fake, 1, writers=("developer", "tester"), names=("architect", "developer", "tester"))
    [commit] = history(workdir / "logs")
    assert commit["author"] == "developer <developer@azclaw>"
    assert commit["committer"] == "azclaw <azclaw@azclaw>"
    assert commit["body"].splitlines() == [
        "round 1: Wrote cli.py.", "",
        "architect: Plan: a CLI with two files. Second line.",
        "developer: Wrote cli.py.",
        "tester: Wrote the test. It imports cli.", "",
        "Co-authored-by: tester <tester@azclaw>"]
    assert commit["files"] == ["cli.py", "test_cli.py"]


def test_git_log_p_in_the_output_folder_is_the_review_and_git_status_is_clean(fake_llm, workdir):
    fake = fake_llm(per_agent={"developer": [
        call("write_file", {"path": "src/app.py", "content": "def main():\n    return 1\n"}), text("First version."),
        call("write_file", {"path": "src/app.py", "content": "def main():\n    return 2\n"}), text("Second.")]})
    run_library(fake, 2, names=("developer",))
    assert (workdir / "output" / ".git").read_text() == "gitdir: ../logs/t.git\n"
    review = git("log", "-p", cwd=workdir / "output")
    assert "round 2: Second." in review and "-    return 1\n+    return 2" in review
    assert "new file mode 100644" in review and "+++ b/src/app.py" in review
    assert git("status", "--porcelain", cwd=workdir / "output") == ""


def test_what_the_run_found_in_the_output_folder_is_committed_before_round_one_by_azclaw(fake_llm, workdir):
    (workdir / "output").mkdir()
    (workdir / "output" / "README.md").write_text("the person's project\n")
    fake = fake_llm(per_agent={"developer": [call("write_file", {"path": "a.py", "content": "a = 1\n"}),
                                             text("Wrote a.py.")]})
    run_library(fake, 1, names=("developer",))
    found, round_1 = history(workdir / "logs")
    assert found["subject"] == "before round 1: the output folder as the run found it"
    assert found["author"] == "azclaw <azclaw@azclaw>" and found["files"] == ["README.md"]
    assert round_1["author"] == "developer <developer@azclaw>" and round_1["files"] == ["README.md", "a.py"]
    assert git("--git-dir=logs/t.git", "diff", "--name-only", "HEAD~1", "HEAD", cwd=workdir) == "a.py\n"


def test_any_file_name_is_committed_as_it_is_and_names_git_takes_for_its_own_are_left_out(fake_llm, workdir):
    output = workdir / "output"
    names = [b'"quoted', b"new\nline", b"back\\slash", b"tab\tand space", b"caf\xc3\xa9", b"not-utf8-\xff",
             b"--exec=touch PWNED", b"-n"]
    output.mkdir()
    for name in names:
        (output / os.fsdecode(name)).write_bytes(b"content of " + name)
    for reserved in (".GIT", ".git.", ".g\u200cit", "GIT~1"):
        (output / reserved).mkdir()
        (output / reserved / "config").write_text("[core]\n\tfsmonitor = touch PWNED\n")
    (output / ".gitignore").symlink_to("/etc/passwd")
    outside = workdir / "outside-secret.txt"
    outside.write_text("SECRET outside the output folder\n")
    os.link(outside, output / "hard-link")
    fake = fake_llm()
    run_library(fake, 1, names=("developer",))
    [found] = history(workdir / "logs")
    listed = subprocess.run([GIT, "--git-dir=logs/t.git", "ls-tree", "-z", "--name-only", "HEAD"], cwd=workdir,
                            capture_output=True).stdout.split(b"\0")
    assert sorted(n for n in listed if n) == sorted(names)
    for name in names:
        shown = subprocess.run([GIT, "--git-dir=logs/t.git", "cat-file", "blob", b"HEAD:" + name], cwd=workdir,
                               capture_output=True).stdout
        assert shown == b"content of " + name
    assert ".gitignore: a link by a name git refuses as a link" in found["body"]
    assert "hard-link: has 2 hard links" in found["body"]
    assert not list(workdir.rglob("PWNED"))


def test_a_git_planted_in_the_output_folder_on_path_is_never_run(fake_llm, workdir, monkeypatch):
    planted = workdir / "output" / "bin"
    planted.mkdir(parents=True)
    (planted / "git").write_text(f"#!/bin/sh\ntouch {workdir / 'PWNED'}\nexit 1\n")
    (planted / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{planted}{os.pathsep}.{os.pathsep}{os.environ['PATH']}")
    fake = fake_llm(per_agent={"developer": [call("write_file", {"path": "a.py", "content": "a = 1\n"}),
                                             text("Wrote a.py.")]})
    run_library(fake, 1, names=("developer",))
    assert [c["subject"] for c in history(workdir / "logs")] == ["before round 1: the output folder as the run found it",
                                                                 "round 1: Wrote a.py."]
    assert not (workdir / "PWNED").exists()


def test_a_run_without_git_writes_no_repository(fake_llm, workdir):
    fake = fake_llm(per_agent={"developer": [call("write_file", {"path": "a.py", "content": "x = 1\n"}), text("ok")]})
    orch = orchestrator(team(fake.url, "developer", writers=("developer",)), client_factory=fast_clients)
    orch.set_task("build it", "t")
    orch.run(max_rounds=1)
    assert not (workdir / "logs" / "t.git").exists() and not (workdir / "output" / ".git").exists()


def test_a_failing_commit_is_a_warning_and_the_next_round_commits_both(fake_llm, workdir):
    fake = fake_llm(per_agent={"developer": [
        call("write_file", {"path": "a.py", "content": "a = 1\n"}), text("Wrote a."),
        call("write_file", {"path": "b.py", "content": "b = 1\n"}), text("Wrote b."),
        call("write_file", {"path": "c.py", "content": "c = 1\n"}), text("Wrote c.")]})
    objects = workdir / "logs" / "t.git" / "objects"

    def break_then_mend(event):  # the disk fails for round 2's commit only
        if isinstance(event, RoundFinished) and event.round == 1:
            objects.rename(objects.with_name("objects.away"))
            objects.write_text("not a folder")
        if isinstance(event, TurnStarted) and event.round == 3:
            objects.unlink()
            objects.with_name("objects.away").rename(objects)
    orch = run_library(fake, 3, names=("developer",), observers=[break_then_mend])
    assert orch.ending.reason == "max_rounds"
    warnings = [e for e in journal(workdir / "logs" / "t_journal.jsonl") if e["event"] == "warning"]
    assert [(w["what"], w["round"]) for w in warnings] == [("git", 2)]
    assert "round 2 was not committed" in warnings[0]["message"]
    commits = history(workdir / "logs")
    assert [c["subject"] for c in commits] == ["round 1: Wrote a.", "round 3: Wrote c."]
    assert commits[1]["files"] == ["a.py", "b.py", "c.py"]


# -- the CLI: --git, a missing git, a .git that is not azclaw's, --resume -----------------

def test_git_flag_commits_through_the_cli(azclaw, fake_llm, workdir):
    fake = fake_llm(per_agent={"developer": [call("write_file", {"path": "a.py", "content": "a = 1\n"}),
                                             text("Wrote a.py.")]})
    proc = azclaw("run", "--task", "x", "--name", "t", "--endpoint", fake.url, "--agents", "developer",
                  "--max-rounds", "2", "--git")
    assert proc.returncode == 0, proc.stderr
    assert [c["subject"] for c in history(workdir / "logs")] == ["round 1: Wrote a.py."]
    assert "git: round 1 committed as" in proc.stdout + proc.stderr


def test_git_without_git_installed_is_one_line_before_round_one(azclaw, fake_llm, workdir):
    fake = fake_llm()
    env = {**os.environ, "PATH": str(workdir / "empty")}  # python is started by its full path
    (workdir / "empty").mkdir()
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--max-rounds", "1", "--git", env=env)
    assert_one_error_line(proc, "--git", "git command is not installed")
    assert fake.chats == []


@pytest.mark.parametrize("make", ["folder", "file"])
def test_an_output_folder_with_a_git_of_its_own_is_refused_before_round_one(azclaw, fake_llm, workdir, make):
    fake = fake_llm()
    dot = workdir / "output" / ".git"
    dot.parent.mkdir()
    if make == "folder":
        git("init", "-q", cwd=dot.parent)  # the person's own repository: --git must not take it over
    else:
        dot.write_text("gitdir: /somewhere/else.git\n")
    proc = azclaw("run", "--task", "x", "--endpoint", fake.url, "--max-rounds", "1", "--git")
    assert_one_error_line(proc, str(dot), "--output")
    assert fake.chats == []
    assert dot.exists() and not list((workdir / "logs").glob("*.git"))


def test_resume_after_a_kill_goes_on_from_the_last_commit(azclaw_popen, azclaw, fake_llm, workdir):
    held = threading.Event()
    fake = fake_llm(per_agent={
        "developer": [call("write_file", {"path": "a.py", "content": "a = 1\n"}), text("Wrote a.py."),
                      call("write_file", {"path": "b.py", "content": "b = 1\n"}), text("Wrote b.py."),
                      call("write_file", {"path": "a.py", "content": "a = 2\n"}), text("Changed a.py.")],
        "tester": [text("a.py looks right."), Reply(text="never seen: the run is killed", gate=held),
                   text("b.py looks right."), text("All good.")]})
    args = ("run", "--task", "x", "--name", "t", "--endpoint", fake.url, "--agents", "developer,tester",
            "--max-rounds", "3", "--git", "--quiet")
    first = azclaw_popen(*args)
    journal_path = workdir / "logs" / "t_journal.jsonl"
    wait_for(lambda: any(e["event"] == "turn" and e["round"] == 2 and e["agent"] == "developer"
                         for e in journal(journal_path)) if journal_path.exists() else False,
             timeout=120, what="the developer's turn of round 2")  # generous: a busy machine
    wait_for(lambda: len(fake.chats_of("tester")) == 2, timeout=120, what="the tester's held request")
    first.kill()  # SIGKILL in the middle of round 2: b.py is written, round 2 not finished
    first.wait()
    held.set()
    assert [c["subject"] for c in history(workdir / "logs")] == ["round 1: Wrote a.py."]
    assert (workdir / "output" / "b.py").exists()

    proc = azclaw(*args[:-1], "--resume")
    assert proc.returncode == 0, proc.stderr
    commits = history(workdir / "logs")
    assert [c["subject"] for c in commits] == ["round 1: Wrote a.py.", "round 2: Wrote b.py.",
                                               "round 3: Changed a.py."]
    assert commits[1]["author"] == "developer <developer@azclaw>" and commits[1]["files"] == ["a.py", "b.py"]
    assert "tester: b.py looks right." in commits[1]["body"]
    assert git("log", "-1", "--format=%s", "HEAD~1", cwd=workdir / "output").strip() == "round 2: Wrote b.py."


def test_a_kill_after_the_commit_and_before_the_rounds_end_was_journaled_makes_no_second_commit(fake_llm, workdir):
    fake = fake_llm(per_agent={"developer": [
        call("write_file", {"path": "a.py", "content": "a = 1\n"}), text("Wrote a.py."),
        call("write_file", {"path": "b.py", "content": "b = 1\n"}), text("Wrote b.py.")]})
    run_library(fake, 1, names=("developer",))
    # what a kill -9 between the commit and the journal's round_end leaves: the turns, no round_end, no checkpoint
    logs = workdir / "logs"
    lines = (logs / "t_journal.jsonl").read_text().splitlines(keepends=True)
    (logs / "t_journal.jsonl").write_text("".join(ln for ln in lines if '"event": "turn"' in ln
                                                  or '"event": "run_start"' in ln))
    (logs / "t_checkpoint.json").unlink()
    orch = orchestrator(team(fake.url, "developer", writers=("developer",)), client_factory=fast_clients, git=True)
    orch.set_task("build it", "t")
    orch.run(max_rounds=2, resume=True)
    assert [e["round"] for e in journal(logs / "t_journal.jsonl") if e["event"] == "round_end"] == [1, 2]
    assert [c["subject"] for c in history(logs)] == ["round 1: Wrote a.py.", "round 2: Wrote b.py."]


# -- hostile model code ------------------------------------------------------------------------

HOSTILE = r"""
import os, stat
marker = {marker!r}
hook = "#!/bin/sh\ntouch " + marker + "\n"
open(".gitattributes", "w").write("* filter=evil diff=evil\n*.py text eol=crlf\n")
for repo in (".git", "sub/.git", ".Git"):
    os.makedirs(repo + "/hooks", exist_ok=True)
    os.makedirs(repo + "/refs/heads", exist_ok=True)
    os.makedirs(repo + "/objects", exist_ok=True)
    open(repo + "/HEAD", "w").write("ref: refs/heads/main\n")
    open(repo + "/config", "w").write(
        "[core]\n\tfsmonitor = touch " + marker + "\n\thooksPath = hooks\n"
        "[filter \"evil\"]\n\tclean = touch " + marker + "\n\tsmudge = touch " + marker + "\n"
        "[diff \"evil\"]\n\ttextconv = touch " + marker + "\n")
    for name in ("pre-commit", "post-commit", "pre-auto-gc", "reference-transaction", "post-index-change"):
        open(repo + "/hooks/" + name, "w").write(hook)
        os.chmod(repo + "/hooks/" + name, 0o755)
open("sub/code.py", "w").write("x = 1\n")
open("app.py", "w").write("print('hi')\n")
os.symlink("/etc/passwd", "passwd")
os.symlink("/etc", "etc")
open("--exec=touch PWNED", "w").write("a file named like an option\n")
with open("big.bin", "wb") as f:
    f.truncate(11 * 1024 * 1024)
try:
    os.mkfifo("pipe")
except OSError as exc:
    print("no fifo:", exc)
print("planted")
"""


def test_hostile_model_code_makes_git_run_nothing_and_commit_nothing_from_outside(azclaw, fake_llm, workdir):
    marker = workdir / "PWNED"
    fake = fake_llm(per_agent={"developer": [
        call("run_python", {"code": HOSTILE.format(marker=str(marker))}), text("Planted everything."),
        call("write_file", {"path": "notes.md", "content": "round two\n"}), text("Round two.")]})
    sandbox = [] if SANDBOXED else ["--unsandboxed-python"]  # what git does with the files is the point here
    proc = azclaw("run", "--task", "x", "--name", "t", "--endpoint", fake.url, "--agents", "developer",
                  "--max-rounds", "2", "--git", *sandbox)
    assert proc.returncode == 0, proc.stderr
    assert "planted" in fake.chats_of("developer")[1].tool_results[0]
    output, logs = workdir / "output", workdir / "logs"
    first, second = history(logs)
    assert first["author"] == "developer <developer@azclaw>"
    assert sorted(first["files"]) == sorted(["--exec=touch PWNED", ".gitattributes", "app.py", "etc",
                                             "passwd", "sub/code.py"])
    assert "big.bin (11.0 MB): over 10 MB" in first["body"]
    tree = git("--git-dir=logs/t.git", "ls-tree", first["sha"], cwd=workdir)
    assert "120000 blob" in next(line for line in tree.splitlines() if line.endswith("\tpasswd"))
    assert git("--git-dir=logs/t.git", "show", f"{first['sha']}:passwd", cwd=workdir) == "/etc/passwd"
    assert git("--git-dir=logs/t.git", "show", f"{first['sha']}:.gitattributes", cwd=workdir).startswith(
        "* filter=evil")  # stored as written: no filter ran
    everything = git("--git-dir=logs/t.git", "cat-file", "--batch-all-objects", "--batch", cwd=workdir)
    assert "root:" not in everything  # /etc/passwd's content is nowhere in the repository
    assert sorted(second["files"]) == sorted(first["files"] + ["notes.md"])
    # the model's .git folder is moved aside when the run ends, and the .git file is azclaw's
    assert (output / ".git").read_text() == "gitdir: ../logs/t.git\n"
    assert (output / ".git.replaced" / "hooks" / "pre-commit").exists()
    warning = next(e for e in journal(logs / "t_journal.jsonl") if e["event"] == "warning" and e["what"] == "git")
    assert ".git.replaced" in warning["message"]
    # the person's review runs nothing either
    git("log", "-p", cwd=output)
    git("status", cwd=output)
    git("diff", "HEAD~1", cwd=output)
    assert not marker.exists() and not [p for p in workdir.rglob("PWNED")]


def test_the_file_tools_cannot_reach_the_repository(fake_llm, workdir):
    fake = fake_llm(per_agent={"developer": [
        calls(("write_file", {"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\ntouch PWNED\n"}),
              ("write_file", {"path": ".git", "content": "gitdir: /tmp/evil\n"}),
              ("write_file", {"path": "../logs/t.git/hooks/pre-commit", "content": "x"}),
              ("read_file", {"path": ".git"}), ("list_files", {"directory": ".git"}),
              ("read_file", {"path": "../logs/t.git/HEAD"})),
        text("Tried.")]})
    run_library(fake, 1, names=("developer",))
    results = fake.chats_of("developer")[1].tool_results
    assert len(results) == 6 and all(r.startswith("ERROR") for r in results), results
    assert not (workdir / "logs" / "t.git" / "hooks").exists()
    assert (workdir / "output" / ".git").read_text() == "gitdir: ../logs/t.git\n"  # azclaw's, as every run ends
    assert git("--git-dir=logs/t.git", "rev-list", "--all", cwd=workdir) == ""  # nothing written: no commit


REACH = r"""
import os
for what, act in [("write", lambda: open({head!r}, "w").write("ref: refs/heads/evil\n")),
                  ("hook", lambda: open({hook!r}, "w").write("#!/bin/sh\n")),
                  ("list", lambda: os.listdir({repo!r})),
                  ("read", lambda: open({head!r}).read())]:
    try:
        act()
        print(what, "ESCAPED")
    except OSError as exc:
        print(what, "REFUSED", type(exc).__name__)
"""


@pytest.mark.skipif(not SANDBOXED, reason="no operating-system sandbox here")
def test_run_python_can_neither_read_nor_replace_the_repository(fake_llm, workdir):
    repo = workdir / "logs" / "t.git"
    code = REACH.format(head=str(repo / "HEAD"), hook=str(repo / "hooks" / "pre-commit"), repo=str(repo))
    fake = fake_llm(per_agent={"developer": [
        call("write_file", {"path": "a.py", "content": "a = 1\n"}), text("Wrote a.py."),
        call("run_python", {"code": code}), text("Tried the repository.")]})
    run_library(fake, 2, names=("developer",))
    result = fake.chats_of("developer")[3].tool_results[0]
    assert result.count("REFUSED") == 4 and "ESCAPED" not in result, result
    assert (repo / "HEAD").read_text() == "ref: refs/heads/main\n" and not (repo / "hooks").exists()


def test_the_repository_is_made_without_sample_hooks_and_with_azclaw_as_its_only_config(fake_llm, workdir):
    fake = fake_llm(per_agent={"developer": [call("write_file", {"path": "a.py", "content": "a = 1\n"}),
                                             text("Wrote a.py.")]})
    run_library(fake, 1, names=("developer",))
    repo = workdir / "logs" / "t.git"
    assert not (repo / "hooks").exists()
    config = git(f"--git-dir={repo}", "config", "--list", "--local", cwd=workdir).splitlines()
    assert "core.bare=false" in config and f"azclaw.output={workdir / 'output'}" in config
    assert not [line for line in config if line.split("=")[0].endswith(("fsmonitor", "hookspath", "sshcommand"))]
