"""What a server tells about itself: the models it serves and the context
size it runs them with. The run (``LLMClient.context_size()``,
``LLMClient.check_model()``) and ``azclaw doctor`` both ask through here,
so they cannot disagree.

Where each server says its context size, in the order asked:

* llama.cpp: ``GET /props`` -> ``default_generation_settings.n_ctx`` (newer
  builds also a top-level ``n_ctx``);
* vLLM: ``GET /v1/models`` -> ``max_model_len`` of the model (OpenRouter and
  others: ``context_length``);
* LM Studio: ``GET /api/v0/models`` -> ``loaded_context_length`` of the
  loaded model (``max_context_length`` is what the model was trained for,
  not what it was loaded with, so it is not taken);
* Ollama: ``POST /api/show`` -> ``num_ctx`` in its ``parameters`` when the
  model sets one, else ``GET /api/ps`` -> ``context_length`` of the loaded
  model. ``model_info.<arch>.context_length`` is only what the model was
  trained for, not what Ollama runs it with (2048-4096 tokens unless told),
  so it is not taken.

How many requests a server works on at once (``slots``): llama.cpp's
``GET /props`` -> ``total_slots`` (its ``--parallel``); None elsewhere.
Whether a server is up again (``answers``): ``GET /health`` (llama.cpp,
vLLM, SGLang, the routers), or ``/v1/models`` where there is no ``/health``.

Which model names a server takes (``unserved``): the ones ``/v1/models``
lists (for Ollama also ``NAME`` for ``NAME:latest``); any name at all on
llama.cpp's ``llama-server`` with one model and on llama-cpp-python (they
serve what they loaded whatever the request says); and ``default`` where one
model is listed (the client then sends that model's name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..numbers import positive
from ..errors import EndpointError
from .transport import fetch_json

PROBE_TIMEOUT = 10.0
_NUM_CTX = re.compile(r"\bnum_ctx\s+(\d{1,9})\b")


@dataclass
class ContextSize:
    """A server's context size in tokens, and where it was read."""

    tokens: int
    source: str


def _get(url: str, api_key: str | None, payload: dict | None = None, timeout: float = PROBE_TIMEOUT):
    try:
        reply = fetch_json(url, payload, timeout=timeout, api_key=api_key)
    except EndpointError:
        return None
    return reply.data if reply.ok and isinstance(reply.data, dict) else None


def entries_of(data: object) -> list[dict] | None:
    """The model entries of a ``/v1/models`` reply body (None when it has no list)."""
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    return [m for m in entries if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]]


def model_entries(root: str, api_key: str | None, timeout: float = PROBE_TIMEOUT) -> list[dict] | None:
    """The entries of ``/v1/models`` (None when it does not answer with a list)."""
    return entries_of(_get(root + "/v1/models", api_key, timeout=timeout))


def served_models(root: str, api_key: str | None, timeout: float = PROBE_TIMEOUT) -> list[str] | None:
    """The model names a server lists, or None when it does not say."""
    entries = model_entries(root, api_key, timeout)
    return None if entries is None else [m["id"] for m in entries]


def _named(entries: list[dict], model: str) -> list[dict]:
    """The entries that are ``model`` (Ollama: ``NAME`` is ``NAME:latest``)."""
    names = {model} | ({f"{model}:latest"} if ":" not in model else set())
    return [m for m in entries if m["id"] in names]


def unserved(model: str, entries: list[dict] | None) -> list[str] | None:
    """The model names a server offers when it will not take ``model``;
    None when it will, or may (see the module doc; a server that lists
    nothing is not judged)."""
    if not entries:
        return None
    ids = [m["id"] for m in entries]
    owners = {str(m.get("owned_by", "")) for m in entries}
    if _named(entries, model) or (model == "default" and len(ids) == 1):
        return None
    if owners == {"me"} or (owners == {"llamacpp"} and len(ids) == 1):
        return None  # llama-cpp-python, llama-server with one model: any name is served
    return ids


def context_size(root: str, model: str, api_key: str | None,
                 timeout: float = PROBE_TIMEOUT) -> ContextSize | None:
    """The context the server at ``root`` runs ``model`` with, or None when
    it does not tell."""
    props = _get(root + "/props", api_key, timeout=timeout)
    if props is not None:
        settings = props.get("default_generation_settings")
        n = positive(settings.get("n_ctx")) if isinstance(settings, dict) else None
        n = n or positive(props.get("n_ctx"))
        if n:
            return ContextSize(n, "/props n_ctx")
    entries = model_entries(root, api_key, timeout) or []
    chosen = _named(entries, model) or (entries if len(entries) == 1 else [])
    for m in chosen:
        for key in ("max_model_len", "context_length"):
            if positive(m.get(key)):
                return ContextSize(m[key], f"/v1/models {key}")
    name = chosen[0]["id"] if chosen else model
    lms = entries_of(_get(root + "/api/v0/models", api_key, timeout=timeout))
    if lms:
        loaded = [m for m in lms if positive(m.get("loaded_context_length"))]
        for m in _named(loaded, name) or (loaded if len(loaded) == 1 else []):
            return ContextSize(m["loaded_context_length"], "/api/v0/models loaded_context_length")
    if not name or name == "default":
        return None
    show = _get(root + "/api/show", api_key, {"model": name}, timeout=timeout)
    if show is not None:
        params = show.get("parameters")
        found = _NUM_CTX.search(params) if isinstance(params, str) else None
        if found and positive(int(found.group(1))):
            return ContextSize(int(found.group(1)), "/api/show num_ctx")
        ps = _get(root + "/api/ps", api_key, timeout=timeout)
        names = {name} | ({f"{name}:latest"} if ":" not in name else set())
        for m in (ps.get("models") if ps is not None and isinstance(ps.get("models"), list) else []):
            if isinstance(m, dict) and (m.get("name") in names or m.get("model") in names) \
                    and positive(m.get("context_length")):
                return ContextSize(m["context_length"], "/api/ps context_length")
    return None


def slots(root: str, api_key: str | None, timeout: float = PROBE_TIMEOUT) -> int | None:
    """How many requests the server at ``root`` works on at once, where it
    tells (llama.cpp ``/props`` ``total_slots``); None when it does not."""
    props = _get(root + "/props", api_key, timeout=timeout)
    return positive(props.get("total_slots")) if props is not None else None


def answers(root: str, api_key: str | None, timeout: float = PROBE_TIMEOUT) -> bool:
    """Is the server at ``root`` up and ready: ``/health`` answers 2xx (a
    server loading its model answers 503), or, where it has no ``/health``,
    ``/v1/models`` does."""
    try:
        reply = fetch_json(root + "/health", timeout=timeout, api_key=api_key)
        if reply.status in (404, 405):
            reply = fetch_json(root + "/v1/models", timeout=timeout, api_key=api_key)
    except EndpointError:
        return False
    return reply.ok
