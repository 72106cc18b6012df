"""What a server tells about itself: the models it serves and the context
size it runs them with.

Where each server says its context size:

* llama.cpp: ``GET /props`` -> ``default_generation_settings.n_ctx`` (newer
  builds also a top-level ``n_ctx``);
* vLLM: ``GET /v1/models`` -> ``max_model_len`` of the model (OpenRouter and
  others: ``context_length``);
* Ollama: ``POST /api/show`` -> ``num_ctx`` in its ``parameters`` when the
  model sets one, else ``GET /api/ps`` -> ``context_length`` of the loaded
  model. ``model_info.<arch>.context_length`` is only what the model was
  trained for, not what Ollama runs it with (2048-4096 tokens unless told),
  so it is not taken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .completion import MAX_COUNT
from ..errors import EndpointError
from .transport import fetch_json

PROBE_TIMEOUT = 10.0


@dataclass
class ContextSize:
    """A server's context size in tokens, and where it was read."""

    tokens: int
    source: str


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < MAX_COUNT:
        return value
    return None


def _get(url: str, api_key: str | None, payload: dict | None = None, timeout: float = PROBE_TIMEOUT):
    try:
        reply = fetch_json(url, payload, timeout=timeout, api_key=api_key)
    except EndpointError:
        return None
    return reply.data if reply.ok and isinstance(reply.data, dict) else None


def model_entries(root: str, api_key: str | None, timeout: float = PROBE_TIMEOUT) -> list[dict] | None:
    """The entries of ``/v1/models`` (None when it does not answer with a list)."""
    data = _get(root + "/v1/models", api_key, timeout=timeout)
    entries = data.get("data") if data is not None else None
    if not isinstance(entries, list):
        return None
    return [m for m in entries if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]]


def served_models(root: str, api_key: str | None, timeout: float = PROBE_TIMEOUT) -> list[str] | None:
    """The model names a server lists, or None when it does not say."""
    entries = model_entries(root, api_key, timeout)
    return None if entries is None else [m["id"] for m in entries]


def context_size(root: str, model: str, api_key: str | None,
                 timeout: float = PROBE_TIMEOUT) -> ContextSize | None:
    """The context the server at ``root`` runs ``model`` with, or None when
    it does not tell."""
    props = _get(root + "/props", api_key, timeout=timeout)
    if props is not None:
        settings = props.get("default_generation_settings")
        n = _int(settings.get("n_ctx")) if isinstance(settings, dict) else None
        n = n or _int(props.get("n_ctx"))
        if n:
            return ContextSize(n, "/props n_ctx")
    entries = model_entries(root, api_key, timeout) or []
    chosen = [m for m in entries if m["id"] == model] or (entries if len(entries) == 1 else [])
    for m in chosen:
        for key in ("max_model_len", "context_length"):
            if _int(m.get(key)):
                return ContextSize(m[key], f"/v1/models {key}")
    name = chosen[0]["id"] if chosen else model
    if not name or name == "default":
        return None
    show = _get(root + "/api/show", api_key, {"model": name}, timeout=timeout)
    if show is not None:
        params = show.get("parameters")
        found = re.search(r"\bnum_ctx\s+(\d{1,9})\b", params) if isinstance(params, str) else None
        if found and _int(int(found.group(1))):
            return ContextSize(int(found.group(1)), "/api/show num_ctx")
        ps = _get(root + "/api/ps", api_key, timeout=timeout)
        for m in (ps.get("models") if ps is not None and isinstance(ps.get("models"), list) else []):
            if isinstance(m, dict) and m.get("name") in (name, f"{name}:latest") and _int(m.get("context_length")):
                return ContextSize(m["context_length"], "/api/ps context_length")
    return None
