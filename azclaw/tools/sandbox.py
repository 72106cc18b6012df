"""Where agents may read and write, which files they never see, and how
model-written Python runs.

Containment is checked on the real path (symbolic links resolved), never on
the string the model sent; the file tools then open that path again without
following any link (``safeopen``), so a link swapped in meanwhile fails.
``run_python`` runs under the operating-system sandbox of ``confine``, and not
at all where none works unless the user chose ``run_python="unsandboxed"``.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
import re
import sys
from pathlib import Path

from . import confine
from .confine import protect_process  # noqa: F401 - the orchestrator calls it at run start
from ..errors import ConfigError, ToolError

MAX_WRITE_BYTES = 1_000_000
PYTHON_TIMEOUT = 30.0
PYTHON_OUTPUT = 8000
PYTHON_MEMORY_BYTES = 1 << 30
PYTHON_QUOTA_BYTES = 200 << 20  # what one call may write in all (output and its private folder)
PYTHON_QUOTA_FILES = 5000  # files and folders one call may create or change
PYTHON_MODES = ("sandboxed", "bwrap", "unsandboxed", "off")

_SECRET_NAMES = [".env", ".env.*", "*.env", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "id_xmss*",
                 "*_rsa", "*_ed25519", "*_ecdsa", "ssh_host_*key*", "*.ppk", "*.pem", "*.key", "*.p12",
                 "*.pfx", "*.jks", "*.keystore", "*.keychain", "*.keychain-db", "*.kdbx", "*.gpg", "secring.*",
                 ".netrc", "_netrc", ".pgpass", ".my.cnf", ".npmrc", ".yarnrc.yml", ".pypirc", ".s3cfg", ".boto",
                 ".htpasswd", "htpasswd", ".dockercfg", "kubeconfig", ".vault-token", ".terraformrc",
                 "*.tfstate", "*.tfstate.*", "*.tfvars", "*.ovpn", "wallet.dat", "token.pickle",
                 "credentials", "credentials.*", "*credentials*.json", ".git-credentials",
                 "service-account*.json", "*service_account*.json", "client_secret*.json", "secrets.*"]
_SECRET_DIRS = {".ssh", ".aws", ".gnupg", ".git", ".docker", ".kube", ".azure", ".password-store",
                "keyrings", "gcloud", ".gcloud"}
_SECRET_PAIRS = {("gh", "hosts.yml"), ("hub", "hub"), ("gh", "config.yml"), ("containers", "auth.json"),
                 (".composer", "auth.json"), ("composer", "auth.json"), ("etc", "shadow"), ("etc", "gshadow"),
                 ("etc", "shadow-"), ("etc", "gshadow-")}
_SECRET_NAME = re.compile("|".join(fnmatch.translate(p) for p in _SECRET_NAMES))  # one pass, not 60
# folders of a person's keys and logins: a source folder holding one is refused (a project's .git is not)
_CREDENTIAL_DIRS = _SECRET_DIRS - {".git"}


def is_secret(path: Path) -> bool:
    """True for files that hold keys or credentials, wherever they are."""
    # lower case: on case-insensitive file systems .GIT/config is .git/config
    return _secret_parts([p.lower() for p in Path(path).parts])


def _secret_parts(parts: list[str]) -> bool:
    if any(p in _SECRET_DIRS for p in parts):
        return True
    if len(parts) >= 2 and (parts[-2], parts[-1]) in _SECRET_PAIRS:
        return True
    return _SECRET_NAME.match(parts[-1] if parts else "") is not None


def hidden_from_code(rel: str, is_dir: bool) -> bool:
    """What model-written code may not read in a source folder (``rel``
    relative to it, "/"-separated): the secret rules of the file tools."""
    parts = rel.lower().split("/")
    return parts[-1] in _SECRET_DIRS if is_dir else _secret_parts(parts)


def home_folders() -> list[Path]:
    """$HOME, the user's home in the password database, and /root."""
    found = [Path(os.path.expanduser("~")), Path("/root")]
    try:
        found.append(Path(pwd.getpwuid(os.getuid()).pw_dir))
    except (KeyError, OSError):
        pass
    homes: list[Path] = []
    for home in found:
        real = home.resolve()
        if real != Path("/") and real not in homes:
            homes.append(real)
    return homes


def check_source_folders(folders, allow_secrets: bool = False) -> None:
    """Refuse a source folder that is /, is or holds a home folder, lies in
    a secret folder or holds a folder of keys or logins (.ssh, .aws, .gnupg
    ...): model-written code may read the source folders. ``allow_secrets``:
    the person means it (the secret files stay hidden from the code and the
    file tools). Raises ConfigError naming the folder."""
    if allow_secrets:
        return
    hint = ("model-written code may read the source folders. Choose the project's own folder, or pass "
            "--allow-secret-sources (library: allow_secret_sources=True) if you mean it")
    for folder in folders:
        real = Path(folder).expanduser().resolve()
        name = str(folder) if str(folder) == str(real) else f"{folder} ({real})"
        if real == Path("/"):
            raise ConfigError(f"source folder {name}: it is the whole file system; {hint}")
        for home in home_folders():
            if real == home or real in home.parents:
                raise ConfigError(f"source folder {name}: it holds the home folder {home}, where keys and "
                                  f"logins live; {hint}")
        inside = [p for p in real.parts if p.lower() in _SECRET_DIRS]
        if inside:
            raise ConfigError(f"source folder {name}: it lies in the secret folder {inside[0]}; {hint}")
        view = confine.source_view([real], hidden_from_code)
        found = [p for p in view.hidden if Path(p).name.lower() in _CREDENTIAL_DIRS]
        if found:
            raise ConfigError(f"source folder {name}: it holds {found[0]}, a folder of keys or logins; {hint}")


def locate(path: str, roots: list[Path], must_exist: bool = True) -> tuple[Path, Path]:
    """Resolve ``path`` (relative to each root in turn) to (real root, path
    relative to it) inside one of ``roots``; raise ToolError for anything else."""
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
            return root, rel
        candidates.append(real)
    if candidates:
        raise ToolError(f"{path!r}: no such file or directory")
    raise ToolError(f"{path!r}: outside the folders you may use")


def resolve_inside(path: str, roots: list[Path], must_exist: bool = True) -> Path:
    """The real path of ``path`` inside one of ``roots`` (see ``locate``)."""
    root, rel = locate(path, roots, must_exist)
    return root / rel


def check_output_folder(output, agents_dir=None, log_dir=None) -> None:
    """Refuse an output folder that holds (or lies inside) the agents'
    memories, the log folder with the journal and checkpoint, or $HOME:
    write_file and run_python write there. Raises ConfigError."""
    out = Path(output).expanduser().resolve()
    home = Path(os.path.expanduser("~")).resolve()
    if out == home or out in home.parents:
        raise ConfigError(f"output folder {output}: it holds your home folder {home}; "
                          "model-written code writes there. Choose a project folder for --output")
    for what, option, folder in (("agents folder", "--agents-dir", agents_dir), ("log folder", "--log-dir", log_dir)):
        if folder is None:
            continue
        other = Path(folder).expanduser().resolve()
        if out == other or out in other.parents or other in out.parents:
            raise ConfigError(f"output folder {output}: it overlaps the {what} {folder}; agents and their code "
                              f"could rewrite memories, the journal or the checkpoint. Choose another --output "
                              f"or {option}")


def python_mode(value) -> str:
    """``run_python`` as the library takes it: True or "sandboxed" (the
    default: only under a verified OS sandbox), "bwrap" (the same inside
    bubblewrap), "unsandboxed" (the user's choice where none works), False or
    "off"."""
    if value is True or value is None:
        return "sandboxed"
    if value is False:
        return "off"
    if isinstance(value, str) and value.strip().lower() in PYTHON_MODES:
        return value.strip().lower()
    raise ConfigError(f"run_python: expected True, False or one of {', '.join(PYTHON_MODES)}, got {value!r}")


def refusal(level: confine.SandboxLevel, mode: str) -> str:
    """Why run_python may not run under ``level`` in ``mode`` ('' when it may):
    without a verified OS sandbox only the user's "unsandboxed" runs code."""
    if mode == "unsandboxed" or level.confined:
        return ""
    why = "; ".join(level.problems) or f"only {level.text} works here"
    if mode == "bwrap":
        return f"run_python is off: the bubblewrap sandbox chosen for this run does not work ({why})"
    return (f"run_python is off: no operating-system sandbox works on this machine ({why}). The person "
            "running azclaw may allow unconfined code with --unsandboxed-python (library: "
            "run_python=\"unsandboxed\")")


def run_python(code: str, cwd: Path, timeout: float = PYTHON_TIMEOUT, output_limit: int = PYTHON_OUTPUT,
               mode="sandboxed", sources=()) -> str:
    """Run ``code`` with ``python -I`` in ``cwd`` under the OS sandbox (see
    ``confine``): the secrets of the source folders hidden, its writes under
    one quota, no setuid file left behind; kill its whole process tree at
    the time limit and when it ends; return its status and output, cut, and
    what was refused or changed."""
    outcome, limits = _confined(code, cwd, timeout, output_limit, mode, sources, "run_python did not run the code")
    text = outcome.output.decode("utf-8", "replace")
    if len(text) > output_limit or outcome.dropped:
        more = len(text) - output_limit + outcome.dropped
        text = text[:output_limit] + f"\n[... {'at least ' if outcome.dropped else ''}{more} more characters cut]"
    notes = "".join(f"\n[{note}]" for note in _notes(outcome, limits))
    return (f"[{outcome.status}]\n{text}" if text else f"[{outcome.status}, no output]") + notes


def _confined(code: str, cwd: Path, timeout: float, output_limit: int, mode, sources, failed: str):
    """``code`` run under the sandbox ``mode`` asks for, and its limits;
    ToolError when it may not run here."""
    mode = python_mode(mode)
    if mode == "off":
        raise ToolError("run_python is turned off for this run")
    level = confine.probe_sandbox(mode)
    refused = refusal(level, mode)
    if refused:
        raise ToolError(refused)
    names = tuple(n for n in level.namespaces if n != "user")
    limits = confine.Limits(cpu_seconds=int(timeout) + 1, memory_bytes=PYTHON_MEMORY_BYTES,
                            quota_bytes=PYTHON_QUOTA_BYTES, quota_files=PYTHON_QUOTA_FILES)
    try:
        return confine.run(code, Path(cwd), sources=sources, timeout=timeout, output_bytes=output_limit * 4 + 4,
                           confine=mode != "unsandboxed", namespaces=names, use_cgroup=bool(level.cgroup),
                           limits=limits, bwrap=mode == "bwrap", hidden=hidden_from_code), limits
    except confine.SetupError as exc:
        raise ToolError(f"{failed}: {exc}") from None


def run_command(argv, cwd: Path, timeout: float = PYTHON_TIMEOUT, output_limit: int = PYTHON_OUTPUT,
                mode="sandboxed", sources=()) -> tuple[bool, str, str]:
    """Run a command line (a list of words) in ``cwd`` under the sandbox of
    ``run_python`` (a leading ``python`` or ``python3`` is this Python, so
    the packages installed beside azclaw are there); return (it exited with
    0, its status, the end of what it printed). Raises ToolError when the
    sandbox refuses to run anything here."""
    words = [sys.executable if n == 0 and w in ("python", "python3") else str(w) for n, w in enumerate(argv)]
    code = (f"import subprocess, sys\nwords = {words!r}\ntry:\n    sys.exit(subprocess.call(words))\n"
            "except OSError as exc:\n    print('cannot run', words[0] + ':', exc.strerror or exc, flush=True)\n"
            "    sys.exit(127)\n")
    outcome, _ = _confined(code, cwd, timeout, output_limit, mode, sources, "the command did not run")
    text = outcome.output.decode("utf-8", "replace")
    if len(text) > output_limit:  # the end: a test run says what failed last
        text = f"[... {len(text) - output_limit} characters cut]\n" + text[-output_limit:]
    return outcome.exit_code == 0 and not outcome.timed_out, outcome.status, text


def _notes(outcome, limits) -> list[str]:
    """What the tool result says besides the output: a spent quota, setuid
    bits removed, sources hidden unchecked, a missing quota."""
    notes = []
    full = outcome.report("output").get("full", "0")
    if full != "0":
        spent = f"{limits.quota_bytes >> 20} MB" if full == "bytes" else f"{limits.quota_files} files and folders"
        notes.append(f"this call used its whole write quota ({spent} per call, output and temporary files "
                     "together): writes past it were refused with 'No space left on device'")
    if outcome.stripped:
        shown = ", ".join(outcome.stripped[:10]) + (" ..." if len(outcome.stripped) > 10 else "")
        notes.append(f"setuid/setgid bits removed (code may not leave privileged files): {shown}")
    if outcome.unchecked:
        notes.append(f"{len(outcome.unchecked)} folders of the sources were too many to check for secrets and "
                     f"are hidden from code, e.g. {outcome.unchecked[0]}")
    return notes + outcome.notes


def sandbox_summary(mode="sandboxed") -> str:
    """The level run_python gets in this process, for the journal's
    ``run_start`` and ``azclaw doctor``: verified by ``probe_sandbox``."""
    mode = python_mode(mode)
    if mode == "off":
        return "run_python off"
    level = confine.probe_sandbox(mode)
    if mode != "unsandboxed" and not level.confined:
        why = "; ".join(level.problems) or f"only {level.text}"
        hint = "" if mode == "bwrap" else " without --unsandboxed-python"
        return f"none: run_python refused{hint} ({why})"
    return level.text
