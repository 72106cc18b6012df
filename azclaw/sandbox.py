"""Where agents may read and write, which files they never see, and how
model-written Python runs.

Containment is checked on the real path (symbolic links resolved), never on
the string the model sent.
"""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from .errors import ToolError

MAX_WRITE_BYTES = 1_000_000
PYTHON_TIMEOUT = 30.0
PYTHON_OUTPUT = 8000
PYTHON_MEMORY_BYTES = 1 << 30

_SECRET_NAMES = [".env", ".env.*", "*.env", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
                 "*.pem", "*.key", "*.p12", "*.pfx", ".netrc", "_netrc", ".pgpass", ".npmrc",
                 ".pypirc", "credentials", "credentials.*", "*credentials*.json", ".git-credentials",
                 "secrets.*", "*.kdbx"]
_SECRET_DIRS = {".ssh", ".aws", ".gnupg", ".git", ".docker", ".kube", ".azure"}
_SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASS|PWD|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|DSN", re.I)
_URL_PASSWORD = re.compile(r"://[^/@\s]*:[^/@\s]*@")  # postgres://user:password@host


def is_secret(path: Path) -> bool:
    """True for files that hold keys or credentials, wherever they are."""
    # lower case: on case-insensitive file systems .GIT/config is .git/config
    if any(p.lower() in _SECRET_DIRS for p in path.parts):
        return True
    name = path.name.lower()
    return any(fnmatch.fnmatch(name, pattern) for pattern in _SECRET_NAMES)


def resolve_inside(path: str, roots: list[Path], must_exist: bool = True) -> Path:
    """Resolve ``path`` (relative to each root in turn) to a real path inside
    one of ``roots``; raise ToolError for anything else."""
    if not isinstance(path, str) or "\x00" in path:
        raise ToolError("path must be a string without NUL characters")
    cleaned = path.strip()
    if cleaned.startswith("~") or os.path.isabs(cleaned):
        raise ToolError(f"{path!r}: absolute paths are not allowed; use a path relative to the project")
    real_roots = [r.resolve() for r in roots]
    candidates = []
    for root in real_roots:
        real = (root / cleaned).resolve()
        if real != root and root not in real.parents:
            continue
        rel = real.relative_to(root)
        if is_secret(rel):
            raise ToolError(f"{path!r}: reading or writing secrets (keys, .env, credentials, .git) is refused")
        if not must_exist or real.exists():
            return real
        candidates.append(real)
    if candidates:
        raise ToolError(f"{path!r}: no such file or directory")
    raise ToolError(f"{path!r}: outside the folders you may use")


def clean_environment() -> dict[str, str]:
    """The environment for model-written code: no keys, tokens or passwords,
    by name or as the password of a URL."""
    return {k: v for k, v in os.environ.items()
            if not _SECRET_ENV.search(k) and not _URL_PASSWORD.search(v)}


def _limits() -> None:  # runs in the child before exec
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (PYTHON_MEMORY_BYTES, PYTHON_MEMORY_BYTES))
        cpu = int(PYTHON_TIMEOUT) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    except (ImportError, ValueError, OSError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.returncode is None:
            proc.kill()


def run_python(code: str, cwd: Path, timeout: float = PYTHON_TIMEOUT,
               output_limit: int = PYTHON_OUTPUT) -> str:
    """Run ``code`` in a separate isolated interpreter in ``cwd``; kill its
    whole process group at the time limit, and what it left running when it
    ends; return its output, cut."""
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", code], cwd=cwd, env=clean_environment(),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=_limits if os.name == "posix" else None)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        status = f"killed after {timeout:g}s time limit"
    # what the code started in the background must not outlive the call
    _kill_group(proc)
    text = out.decode("utf-8", "replace")
    if len(text) > output_limit:
        text = text[:output_limit] + f"\n[... {len(text) - output_limit} more characters cut]"
    return f"[{status}]\n{text}" if text else f"[{status}, no output]"
