"""A morning you can review: with ``git=True`` (``--git``) every round that
changed the output folder is one git commit, authored by the agents that
wrote, so ``git log -p`` is the review.

Where the repository lives. Model-written code writes anywhere in the output
folder (``run_python`` runs there), so a repository inside it would be the
model's to rewrite, and a hook or a ``core.fsmonitor`` line in its config
runs code the next time anyone uses git there. The repository is therefore
``<log folder>/<topic>.git`` (``RunFolder.git``), which neither the file
tools nor ``run_python`` reach. The output folder gets only a ``.git`` file
naming it (``gitdir: ../logs/<topic>.git``), written when the run ends, when
no model code runs any more: then ``cd output && git log -p`` works. A
``.git`` there that azclaw did not write stops a run before round 1; one that
appears during a run is moved aside to ``.git.replaced`` when it ends.

How a commit is made. azclaw never runs ``git add`` or ``git commit`` on the
output folder. It reads the folder itself (no link followed: a link is
committed as a link; regular files and links only; ``.git`` left out; a file
over ``MAX_FILE_BYTES`` left out with a note in the message) and hands git
the snapshot through ``git fast-import``: nothing in the folder is read by
git, so a model's ``.gitattributes`` filter, ignore file, nested repository
or fake hook does nothing. Every git command runs in the repository's
folder with the user's and the system's configuration ignored, an empty
HOME, hooks and fsmonitor off, and no environment variable of git's passed on.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, StorageError
from .events import Event, Notice, RoundFinished, RunFinished, RunStarted, RunWarning
from .files import write_atomic
from .options import RunFolder

MAX_FILE_BYTES = 10 * 1024 * 1024  # a larger file is left out of the commit, with a note
MAX_READ_BYTES = 256 * 1024 * 1024  # new or changed bytes read for one commit; the rest waits, with a note
MAX_FILES = 10_000  # files and links in one commit
MAX_DEPTH = 64  # folders below the output folder
MAX_NOTES = 20  # "left out" lines in one message
BRANCH = "refs/heads/main"
COMMITTER = "azclaw <azclaw@azclaw>"
REPLACED = ".git.replaced"
SUBJECT_CHARS = 72
MESSAGE_CHARS = 300  # of each agent's message in the commit message
GIT_TIMEOUT = 600.0  # seconds for one git command: generous, a commit of 256 MB on a busy disk

# on every git command: nothing of the user's set-up, nothing that runs a program
SAFE_CONFIG = ("core.hooksPath=/dev/null", "core.fsmonitor=false", "core.sshCommand=",
               "core.attributesFile=/dev/null", "core.excludesFile=/dev/null", "core.askPass=", "credential.helper=",
               "protocol.allow=never", "gc.autoDetach=false", "core.untrackedCache=false")
_PASSED = ("TZ",)  # with a PATH of absolute folders outside the output folder: all a git command sees of ours

_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")


class GitError(StorageError):
    """A git command of ``--git`` failed."""


class Git:
    """git on one repository, and on nothing else: ``--git-dir`` given,
    run in that folder, configuration and hooks of anyone but azclaw ignored."""

    def __init__(self, exe: str, git_dir: Path, path: str = "/usr/bin:/bin"):
        self.exe, self.git_dir, self.path = exe, git_dir, path

    def command(self, *args: str) -> list[str]:
        safe = [item for setting in SAFE_CONFIG for item in ("-c", setting)]
        return [self.exe, f"--git-dir={self.git_dir}", *safe, *args]

    def run(self, *args: str, check: bool = True) -> bytes:
        with tempfile.TemporaryDirectory(prefix="azclaw-git-") as home:
            try:
                proc = subprocess.run(self.command(*args), cwd=self.git_dir, env=environment(home, self.path),
                                      stdin=subprocess.DEVNULL, capture_output=True, timeout=GIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise GitError(f"git {args[0]}: no answer in {GIT_TIMEOUT:.0f} s") from None
        if check and proc.returncode:
            raise GitError(f"git {args[0]} in {self.git_dir}: {_said(proc.stderr)}")
        return proc.stdout

    def feed(self, args: tuple[str, ...], chunks) -> None:
        """Run git with ``chunks`` (an iterable of bytes) on its standard input."""
        with tempfile.TemporaryDirectory(prefix="azclaw-git-") as home, tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(self.command(*args), cwd=self.git_dir, env=environment(home, self.path),
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
            try:
                for chunk in chunks:
                    proc.stdin.write(chunk)
                proc.stdin.close()
                code = proc.wait(timeout=GIT_TIMEOUT)
            except BrokenPipeError:  # git stopped reading: it says why below
                code = proc.wait(timeout=GIT_TIMEOUT)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if code:
                errors.seek(0)
                raise GitError(f"git {args[0]} in {self.git_dir}: {_said(errors.read(4000))}")


def environment(home: str, path: str) -> dict[str, str]:
    """What a git command of azclaw's sees: ``path``, an empty HOME, no system
    or global configuration, no GIT_* of the caller (GIT_DIR, GIT_CONFIG_*...)."""
    env = {k: v for k, v in os.environ.items() if k in _PASSED}
    env.update(PATH=path, HOME=home, XDG_CONFIG_HOME=home, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull,
               GIT_CONFIG_SYSTEM=os.devnull, GIT_ATTR_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
               GIT_NO_REPLACE_OBJECTS="1", LC_ALL="C", LANG="C")
    return env


def _said(stderr: bytes) -> str:
    lines = [clean(line) for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return "; ".join(lines[-3:])[:500] or "failed"


# -- the snapshot: the output folder as git would store it ----------------------

@dataclass(frozen=True)
class Entry:
    mode: str  # 100644, 100755 or 120000 (a link)
    sha: str  # the git blob's id


@dataclass
class Snapshot:
    entries: dict[bytes, Entry] = field(default_factory=dict)  # path (bytes, "/"-separated) -> entry
    notes: list[str] = field(default_factory=list)  # what was left out, for the commit message
    read: int = 0  # bytes read to hash


def blob_id(data: bytes) -> str:
    digest = hashlib.sha1(b"blob %d\0" % len(data))
    digest.update(data)
    return digest.hexdigest()


def reserved(name: str) -> bool:
    """``.git`` and the names file systems take for it (``.GIT``, ``.git.``,
    ``GIT~1``, ``.g\u200cit`` on HFS+)."""
    low = "".join(c for c in name.lower() if unicodedata.category(c) != "Cf")
    return low.rstrip(". ") == ".git" or low.startswith("git~")


# git refuses these as links (fsck, checkout): a model's link by such a name is left out
_NO_LINKS = {".gitmodules", ".gitattributes", ".gitignore", ".mailmap"}


class Scanner:
    """Reads the output folder without following a link anywhere below it;
    remembers the blob id of files whose status did not change since."""

    def __init__(self, root: Path):
        self.root = root
        self._known: dict[bytes, tuple[tuple, Entry]] = {}

    def scan(self, committed: dict[bytes, Entry]) -> Snapshot:
        snap = Snapshot()
        self._settled = time.time_ns() - 1_000_000_000  # a status changed after this may change again unseen
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._walk(fd, b"", 0, snap, committed)
        finally:
            os.close(fd)
        if len(snap.notes) > MAX_NOTES:
            snap.notes[MAX_NOTES:] = [f"and {len(snap.notes) - MAX_NOTES} more"]
        return snap

    def _walk(self, dir_fd: int, prefix: bytes, depth: int, snap: Snapshot, committed: dict) -> None:
        for name in sorted(os.listdir(dir_fd)):
            if reserved(name):
                continue
            path = prefix + os.fsencode(name)
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISDIR(st.st_mode):
                if depth >= MAX_DEPTH:
                    snap.notes.append(f"{_show(path)}/: deeper than {MAX_DEPTH} folders")
                    continue
                try:
                    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                except OSError:
                    continue
                try:
                    self._walk(sub, path + b"/", depth + 1, snap, committed)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                if len(snap.entries) >= MAX_FILES:
                    snap.notes.append(f"{_show(path)}: more than {MAX_FILES:,} files")
                    continue
                entry = self._entry(dir_fd, name, path, st, snap, committed)
                if entry is not None:
                    snap.entries[path] = entry
            else:
                snap.notes.append(f"{_show(path)}: not a file or a link")

    def _entry(self, dir_fd: int, name: str, path: bytes, st: os.stat_result, snap: Snapshot,
               committed: dict) -> Entry | None:
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)
        known = self._known.get(path)
        if known is not None and known[0] == key:
            return known[1]
        if stat.S_ISLNK(st.st_mode):
            if name.lower() in _NO_LINKS:
                snap.notes.append(f"{_show(path)}: a link by a name git refuses as a link")
                return None
            try:
                entry = Entry("120000", blob_id(os.fsencode(os.readlink(name, dir_fd=dir_fd))))
            except OSError:
                return None
        elif st.st_nlink > 1:  # as read_file: another name of the same file may be outside the folder
            snap.notes.append(f"{_show(path)}: has {st.st_nlink} hard links")
            return None
        else:
            why = (f"over {MAX_FILE_BYTES // 2**20} MB" if st.st_size > MAX_FILE_BYTES else
                   "the round's other changes came to 256 MB" if snap.read + st.st_size > MAX_READ_BYTES else "")
            if why:
                kept = committed.get(path)
                snap.notes.append(f"{_show(path)} ({st.st_size / 2**20:.1f} MB): {why}"
                                  + ("; its last committed version stays" if kept else ""))
                return kept
            try:
                data = read_file(dir_fd, name)
            except OSError:
                return None
            snap.read += len(data)
            entry = Entry("100755" if st.st_mode & 0o111 else "100644", blob_id(data))
        if st.st_ctime_ns < self._settled and st.st_mtime_ns < self._settled:
            self._known[path] = (key, entry)
        return entry

    def data(self, path: bytes, entry: Entry) -> bytes:
        """The content of ``path`` again, for the commit (a link's target)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            *folders, name = os.fsdecode(path).split("/")
            for folder in folders:
                sub = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = sub
            if entry.mode == "120000":
                return os.fsencode(os.readlink(name, dir_fd=fd))
            return read_file(fd, name)
        finally:
            os.close(fd)


def read_file(dir_fd: int, name: str) -> bytes:
    """A regular file's bytes (no link followed, nothing else opened: a FIFO,
    a device or a hard link swapped in is refused), at most MAX_FILE_BYTES."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            raise OSError(f"{name}: not a regular file with one name")
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_FILE_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise OSError(f"{name}: grew over {MAX_FILE_BYTES // 2**20} MB")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _show(path: bytes) -> str:
    return clean(os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8"))


# -- the commit message ------------------------------------------------------------

def clean(text: str) -> str:
    """Model text made safe for a commit message and a terminal: no escape
    sequences, no control or format characters (line breaks kept)."""
    text = _ESCAPES.sub(" ", str(text))
    return "".join(c if c == "\n" else "\n" if unicodedata.category(c) in ("Zl", "Zp") else
                   " " if unicodedata.category(c)[0] == "C" else c for c in text)


def one_line(text: str, limit: int) -> str:
    text = " ".join(clean(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def writers(turns) -> list[str]:
    """The agents whose tools changed files this round (write_file), else
    those that ran code (run_python writes without saying what)."""
    def changed(turn) -> bool:
        return any(u.effect and u.effect.kind == "file" and u.effect.status != "unchanged" for u in turn.calls)
    found = [t.agent for t in turns if changed(t)] or [t.agent for t in turns if "run_python" in t.tools]
    return list(dict.fromkeys(found))


def ident(agent: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", agent)[:64].strip(".-") or "agent"
    return f"{name} <{name}@azclaw>"


def message(round_no: int, turns, notes: list[str], subject: str = "") -> tuple[str, str]:
    """(author, message) of a round's commit: ``round N: <first line>``, each
    agent's message in short, what was left out, Co-authored-by trailers."""
    authors = writers(turns)
    spoke = [t for t in turns if t.text.strip()]
    first = next((t for a in authors for t in spoke if t.agent == a), spoke[0] if spoke else None)
    line = next((ln for ln in clean(first.text).splitlines() if ln.strip()), "") if first else ""
    prefix = f"round {round_no}: "
    lines = [subject or prefix + (one_line(line, SUBJECT_CHARS - len(prefix)) or "files changed")]
    lines += ["", *(f"{t.agent}: {one_line(t.text, MESSAGE_CHARS) or '(no message)'}" for t in turns)] if turns else []
    if notes:
        lines += ["", "Left out of this commit:", *(f"- {one_line(n, 200)}" for n in notes)]
    if len(authors) > 1:
        lines += ["", *(f"Co-authored-by: {ident(a)}" for a in authors[1:])]
    return (ident(authors[0]) if authors else COMMITTER), "\n".join(lines) + "\n"


# -- the observer --------------------------------------------------------------------

class GitLog:
    """The run's observer for ``--git``: a commit after each round that
    changed the output folder; the ``.git`` file when the run ends."""

    def __init__(self, git: Git, output: Path, logs: Path):
        self.git, self.output, self.logs = git, output, logs
        self.scanner = Scanner(output)
        self.head, self.tree = self._read_head()
        self.gitfile = f"gitdir: {os.path.relpath(git.git_dir, output)}\n"

    @classmethod
    def open(cls, folder: RunFolder, topic: str) -> "GitLog":
        """The repository of ``topic`` (made the first time), after checking
        that git is installed and that the output folder has no ``.git`` of
        someone else's. Raises ConfigError or GitError."""
        output, logs = folder.output.resolve(), folder.logs.resolve()
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)  # none the model writes in
                               if os.path.isabs(p) and not _inside(Path(p), output))
        exe = shutil.which("git", path=path)
        if not exe:
            raise ConfigError("--git: the git command is not installed (not found on PATH); install git, "
                              "or run without --git")
        found = _dot_git(output, logs)
        if found not in ("missing", "azclaw"):
            raise ConfigError(f"{output / '.git'}: the output folder already has a .git ({found}) that azclaw did "
                              f"not write; --git keeps the history in {folder.git(topic)} and writes that .git "
                              "itself: move it away, or choose another --output")
        git = Git(exe, folder.git(topic).resolve(), path)
        if not (git.git_dir / "HEAD").is_file():
            try:
                git.git_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise GitError(f"{git.git_dir}: {exc.strerror}") from None
            if any(git.git_dir.iterdir()):
                raise GitError(f"{git.git_dir}: exists and is not a git repository; move it away")
            git.run("init", "--quiet", "--template=")
            git.run("config", "core.bare", "false")  # a work tree (the output folder) reads it through .git
            git.run("config", "core.logAllRefUpdates", "true")
            git.run("config", "azclaw.output", str(output))
            git.run("symbolic-ref", "HEAD", BRANCH)
        return cls(git, output, logs)

    def _read_head(self) -> tuple[str, dict[bytes, Entry]]:
        head = self.git.run("rev-parse", "--verify", "--quiet", BRANCH + "^{commit}", check=False).strip()
        if not head:
            return "", {}
        tree = {}
        for record in self.git.run("ls-tree", "-r", "-z", "--full-tree", head.decode()).split(b"\0"):
            if record:
                info, path = record.split(b"\t", 1)
                mode, _, sha = info.decode().split()
                tree[path] = Entry(mode, sha)
        return head.decode(), tree

    def __call__(self, event: Event):
        if isinstance(event, RunStarted):
            said = [Notice(f"git: each round that changes {self.output} is committed to {self.git.git_dir}")]
            if event.resumed_from is None:  # what the run found is not its agents' work (a resume's is: its round's)
                said.append(self._try(event.first_round, (), f"before round {event.first_round}: the output "
                                                             "folder as the run found it"))
            return said
        if isinstance(event, RoundFinished):
            return self._try(event.round, event.turns)
        if isinstance(event, RunFinished):
            try:
                return self.point_output_here()
            except OSError as exc:
                return RunWarning(f"git: {self.output / '.git'} not written: {exc}", what="git")
        return None

    def look_at(self) -> list[str]:
        """For the final summary: where the review is."""
        return [f"git -C {self.output} log -p (the history of every round that changed files)"] if self.head else []

    def _try(self, round_no: int, turns, subject: str = "") -> Event | None:
        try:
            return self.commit(round_no, turns, subject)
        except (GitError, OSError, ValueError, subprocess.SubprocessError) as exc:  # the run goes on
            return RunWarning(f"git: round {round_no} was not committed (the next commit takes its changes): "
                              f"{exc}", round_no, what="git")

    def commit(self, round_no: int, turns, subject: str = "") -> Notice | None:
        """Commit the output folder as round ``round_no`` if it changed since
        the last commit; None when it did not."""
        snap = self.scanner.scan(self.tree)
        if snap.entries == self.tree:
            return None
        author, text = message(round_no, turns, snap.notes, subject)
        when = _now()
        new = dict(snap.entries)

        def stream():
            body = text.encode("utf-8")
            yield (f"commit {BRANCH}\nauthor {author} {when}\ncommitter {COMMITTER} {when}\n"
                   f"data {len(body)}\n").encode() + body + b"\n"
            if self.head:
                yield f"from {self.head}\n".encode()
            yield b"deleteall\n"
            stored = {e.sha for e in self.tree.values()}
            for path, entry in snap.entries.items():
                if entry.sha in stored:
                    yield f"M {entry.mode} {entry.sha} ".encode() + quote(path) + b"\n"
                    continue
                try:
                    data = self.scanner.data(path, entry)  # read again: what is sent is what is recorded
                except OSError:  # gone or swapped meanwhile: the next commit sees what is there
                    del new[path]
                    continue
                new[path] = Entry(entry.mode, blob_id(data))
                yield f"M {entry.mode} inline ".encode() + quote(path) + b"\ndata %d\n" % len(data) + data + b"\n"
                stored.add(new[path].sha)

        self.git.feed(("fast-import", "--quiet", "--date-format=raw"), stream())
        self.head = self.git.run("rev-parse", "--verify", BRANCH).strip().decode()
        changed = sum(1 for p in set(new) | set(self.tree) if new.get(p) != self.tree.get(p))
        self.tree = new
        self.git.run("read-tree", self.head)  # the index, so that git status in the output folder is clean
        self.git.run("gc", "--auto", "--quiet")
        return Notice(f"git: {text.split(':')[0]} committed as {self.head[:10]} by {author.split(' <')[0]} "
                      f"({changed} file{'s' if changed != 1 else ''} changed)")

    def point_output_here(self) -> RunWarning | None:
        """Write the output folder's ``.git`` file (the run is over: no model
        code runs); whatever else stands there is moved aside first."""
        dot = self.output / ".git"
        found = _dot_git(self.output, self.logs)
        if found == "azclaw" and _read_small(dot) == self.gitfile:
            return None
        warning = None
        if found not in ("missing", "azclaw"):
            aside = _free_name(self.output / REPLACED)
            os.rename(dot, aside)
            warning = RunWarning(f"git: {dot} was replaced during the run by something azclaw did not write "
                                 f"({found}); it is moved to {aside.name}: look at it before you use git there",
                                 what="git")
        write_atomic(dot, self.gitfile)
        return warning


def quote(path: bytes) -> bytes:
    """A path for fast-import, C-style quoted (any byte but NUL may be in a name)."""
    out = bytearray(b'"')
    for byte in path:
        if byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte == 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b'"')


def _now() -> str:
    offset = time.localtime().tm_gmtoff // 60
    return f"{int(time.time())} {'+' if offset >= 0 else '-'}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"


def _read_small(path: Path) -> str | None:
    """A regular file's text if it is small; None for anything else (no link followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
            return None
        return os.read(fd, 4097).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _dot_git(output: Path, logs: Path) -> str:
    """What ``output/.git`` is: "missing", "azclaw" (a .git file naming a
    repository in the log folder), or what else stands there."""
    dot = output / ".git"
    try:
        st = dot.lstat()
    except FileNotFoundError:
        return "missing"
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    text = _read_small(dot)
    if text is None or not text.startswith("gitdir: ") or text.count("\n") > 1:
        return "a file"
    target = Path(os.path.normpath(output / text[len("gitdir: "):].strip()))
    return "azclaw" if target.parent == logs and target.name.endswith(".git") else "a .git file naming another folder"


def _inside(path: Path, folder: Path) -> bool:
    real = path.resolve()
    return real == folder or folder in real.parents


def _free_name(path: Path) -> Path:
    n = 1
    found = path
    while os.path.lexists(found):
        n += 1
        found = path.with_name(f"{path.name}-{n}")
    return found
