"""What confined code may touch: the read and write folders, the
environment allow-list and the limits, computed once per call."""

from __future__ import annotations

import os
import sys
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


@dataclass
class Policy:
    """The folders, limits and environment of one confined call."""

    read: list[str] = field(default_factory=list)
    write: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    env: dict[str, str] = field(default_factory=dict)


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
    return env


def make_policy(output: Path, sources: list[Path], private_tmp: Path, limits: Limits | None = None) -> Policy:
    read = [*SYSTEM_READ, *(f"/etc/{name}" for name in ETC_READ), *python_paths(),
            *(str(Path(s).resolve()) for s in sources)]
    write = [*SYSTEM_WRITE, str(Path(output).resolve()), str(Path(private_tmp).resolve())]
    return Policy(read=read, write=write, limits=limits or Limits(), env=environment(private_tmp))
