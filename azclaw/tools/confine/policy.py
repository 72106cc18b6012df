"""What confined code may touch: the read and write folders, the
environment allow-list and the limits, computed once per call.

Landlock only allows, so a source folder with secrets beneath it (a
``.git``, a ``.env``, a ``.ssh``) is not granted whole: ``source_view``
grants each part of it that holds no secret, and the folders on the way to a
secret only as listings (names, not contents). Bubblewrap mounts the same
parts, so what is left out is not there at all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run_python call (per process unless a cgroup
    holds the whole tree)."""

    cpu_seconds: int = 31
    memory_bytes: int = 1 << 30
    file_bytes: int = 64 << 20
    processes: int = 64
    open_files: int = 256
    tree_memory_bytes: int = 2 << 30  # the whole tree, where a cgroup holds it
    quota_bytes: int = 200 << 20  # written in all by one call, output and private folder (0: no quota)
    quota_files: int = 5000  # files and folders one call may create or change


# the system, not the whole of /etc: as root, /etc/shadow and the SSH host keys
# are readable by their owner
SYSTEM_READ = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
               "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full", "/sys/devices/system/cpu"]
ETC_READ = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd", "group",
            "nsswitch.conf", "hosts", "host.conf", "gai.conf", "protocols", "services", "mime.types",
            "locale.alias", "locale.conf", "default/locale", "os-release", "lsb-release", "debian_version",
            "ssl/certs", "ssl/openssl.cnf", "pki/tls/certs", "pki/ca-trust", "ca-certificates", "crypto-policies",
            "alternatives", "fonts", "matplotlibrc", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}", "inputrc", "magic", "mailcap"]
SYSTEM_WRITE = ["/dev/null"]
ENV_NAMES = {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"}
ENV_PREFIXES = ("LC_",)


SOURCE_SCAN_ENTRIES = 100_000  # entries of the source folders checked for secrets per call


@dataclass
class SourceView:
    """The parts of the source folders code may read."""

    read: list[str] = field(default_factory=list)  # files and folders, with all beneath them
    listing: list[str] = field(default_factory=list)  # folders whose names may be listed, not read
    hidden: list[str] = field(default_factory=list)  # secrets left out
    unchecked: list[str] = field(default_factory=list)  # left out: past the scan's budget


def source_view(folders, hidden: Callable[[str, bool], bool], budget: int = SOURCE_SCAN_ENTRIES) -> SourceView:
    """Walk ``folders`` (no links followed) and split them so that nothing
    ``hidden("relative/path", is folder)`` marks is granted: a folder with no
    secret beneath it is granted whole, one with a secret is listed and its
    clean entries granted one by one. Folders past ``budget`` entries are
    left out unchecked."""
    view, seen = SourceView(), [0]
    for folder in folders:
        real = str(Path(folder).resolve())
        if _scan(real, "", hidden, view, seen, budget, 0):
            view.read.append(real)
    return view


def _scan(path: str, rel: str, hidden, view: SourceView, seen: list[int], budget: int, depth: int) -> bool:
    """True when nothing beneath ``path`` is hidden; else its clean parts
    are in ``view`` and it is a listing."""
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except OSError:
        return True  # what azclaw cannot list, the code cannot either
    seen[0] += len(entries)
    clean: list[str] = []
    dirty = False
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_link = entry.is_symlink()
        except OSError:
            is_dir, is_link = False, False
        child = f"{rel}/{entry.name}" if rel else entry.name
        if hidden(child, is_dir):
            view.hidden.append(entry.path)
            dirty = True
        elif is_link:
            continue  # never granted by name (a rule would grant its target); followed where that is granted
        elif not is_dir:
            clean.append(entry.path)
        elif seen[0] > budget or depth > 100:
            view.unchecked.append(entry.path)
            dirty = True
        elif _scan(entry.path, child, hidden, view, seen, budget, depth + 1):
            clean.append(entry.path)
        else:
            dirty = True
    if not dirty:
        return True
    view.read.extend(clean)
    view.listing.append(path)
    return False


@dataclass
class Policy:
    """The folders, limits and environment of one confined call."""

    read: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)
    listing: list[str] = field(default_factory=list)  # folders readable as listings only
    unchecked: list[str] = field(default_factory=list)  # source folders left out unchecked


def python_paths() -> list[str]:
    """The running Python's installation and its package folders (where they
    are, even under $HOME as with pyenv; never $HOME itself or a folder above
    it). Other sys.path entries (the script's folder, the current folder) are
    left out: they can be any folder, the project with its logs included."""
    home = Path(os.path.expanduser("~")).resolve()
    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    prefixes.add(Path(os.path.realpath(sys.executable)).parent.parent)
    found: list[str] = []
    for entry in [*sorted(prefixes), *sys.path]:
        if not entry:
            continue
        real = Path(entry).resolve()
        packages = real.name in ("site-packages", "dist-packages") or any(p in real.parents for p in prefixes)
        if real not in prefixes and not packages:
            continue
        if real == Path("/") or real == home or real in home.parents or not real.exists():
            continue
        if str(real) not in found:
            found.append(str(real))
    return found


def environment(home: Path) -> dict[str, str]:
    """The environment allow-list: locale, time zone, PATH, thread counts;
    HOME and TMPDIR in the call's private folder. Nothing else passes."""
    env = {k: v for k, v in os.environ.items() if k in ENV_NAMES or k.startswith(ENV_PREFIXES)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=str(home), TMPDIR=str(home), TMP=str(home), TEMP=str(home),
               PYTHONIOENCODING="utf-8", MPLBACKEND="Agg")
    if os.geteuid() == 0:  # the code runs as a uid without an account: getpass.getuser() reads these
        env.update(USER="azclaw-sandbox", LOGNAME="azclaw-sandbox")
    return env


def make_policy(output: Path, sources: list[Path], private_tmp: Path, limits: Limits | None = None,
                hidden: Callable[[str, bool], bool] | None = None) -> Policy:
    """``hidden``: what code may not read in the source folders (None: all of them)."""
    view = source_view(sources, hidden) if hidden else SourceView(read=[str(Path(s).resolve()) for s in sources])
    read = [*SYSTEM_READ, *(f"/etc/{name}" for name in ETC_READ), *python_paths(), *view.read]
    write = [*SYSTEM_WRITE, str(Path(output).resolve()), str(Path(private_tmp).resolve())]
    return Policy(read=read, write=write, limits=limits or Limits(), env=environment(private_tmp),
                  listing=view.listing, unchecked=view.unchecked)
