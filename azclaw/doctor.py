"""``azclaw doctor``: will this setup work, and if not, what to change.

For every endpoint of a team it checks that something answers, which server
and model it is, whether a tool call comes back (structured, as text azclaw
parses, or not at all) and whether the server's context fits the requests
azclaw will send; then that the agent, output and log folders are writable
and ``agentazall`` is importable. Each check is one ``Check``: OK, WARN or
FAIL, with a fix for everything that is not OK.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .tools import confine, sandbox
from .agent import Agent
from .tools.builtin import build_default_registry
from .errors import AzclawError, ConfigError, EndpointError
from .client.llm import LLMClient, base_url, fetch_json
from .toolmodes import Step, instructions, read_reply
from .prompt import CHARS_PER_TOKEN, CONTEXT_BUDGET, MESSAGE_BUDGET, system_prompt
from .safetext import one_line
from .topic import Topic

OK, WARN, FAIL = "OK", "WARN", "FAIL"
PROBE_TIMEOUT = 10.0
TOOL_TIMEOUT = 180.0  # one real reply; a CPU model is slow
TOOL_PROMPT = ("Call the remember tool now, with text 'azclaw doctor was here' and title 'doctor'. "
               "Answer with the tool call only.")
OLLAMA_FIX = ("start Ollama with OLLAMA_CONTEXT_LENGTH={n} (e.g. `OLLAMA_CONTEXT_LENGTH={n} ollama serve`), "
              "or put `PARAMETER num_ctx {n}` in a Modelfile and `ollama create` the model")
NO_TOOLS_FIX = {
    "llama.cpp": "start llama-server with --jinja and a model whose chat template knows tools",
    "vLLM": "start vLLM with --enable-auto-tool-choice --tool-call-parser NAME (hermes, llama3_json, ...)",
    "Ollama": "use a model with tool support (ollama.com/search?c=tools)",
    "llama-cpp-python": ("serve an instruction-tuned model that writes <tool_call> JSON (e.g. a Qwen2.5 "
                         "Instruct GGUF: azclaw run --local --model FILE.gguf); tiny base models rarely do"),
}
CONTEXT_FIX = {
    "llama.cpp": "restart llama-server with -c {n}",
    "llama-cpp-python": "restart it with --n_ctx {n} (azclaw --local: --ctx {n})",
    "vLLM": "restart vLLM with --max-model-len {n}",
    "LM Studio": "load the model with a context length of {n} or more",
}


@dataclass
class Check:
    """One line of the diagnosis."""

    status: str  # OK, WARN or FAIL
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        """One line, whatever a server said in it (no escape codes, no line breaks)."""
        text = f"{self.status:<4} {one_line(self.name)}: {one_line(self.detail)}"
        return text + (f" -- fix: {one_line(self.fix)}" if self.fix and self.status != OK else "")


@dataclass
class ServerInfo:
    """What an endpoint's server turned out to be, as far as it tells."""

    kind: str = "unknown"
    models: list[str] = field(default_factory=list)
    model: str = ""  # the model the server loaded or reports first
    n_ctx: int | None = None
    ctx_source: str = ""
    version: str = ""


@dataclass
class Diagnosis:
    """Every check, in order."""

    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def lines(self) -> list[str]:
        return [c.line() for c in self.checks]

    def summary(self) -> str:
        counts = {s: sum(c.status == s for c in self.checks) for s in (OK, WARN, FAIL)}
        return f"{counts[OK]} OK, {counts[WARN]} WARN, {counts[FAIL]} FAIL"


# -- sizes ------------------------------------------------------------------------

@dataclass
class PromptSize:
    """Tokens azclaw's requests reach (estimated at CHARS_PER_TOKEN)."""

    first: int  # the first request of a turn, with room for the reply
    peak: int  # what tool steps may grow a request to, reply included


def prompt_size(agents: list[Agent], topic: Topic | None = None, task: str = "",
                context_budget: int = CONTEXT_BUDGET) -> PromptSize:
    """Build the system prompt each agent would get and add the largest
    previous-round message block and the tool schemas."""
    topic = topic or (Topic.from_task(task) if task else Topic(title="task"))
    registry = build_default_registry()
    last = topic.last_round or 10
    first = 0
    for agent in agents:
        tools = registry.allowed(agent.can_write, agent.tools)
        system = system_prompt(agent, topic, task, agents, tools, last, last)
        schemas = len(json.dumps([t.schema() for t in tools]))
        # one message per agent, each at most one reply long (and never over the budget)
        messages = len(agents) * min(MESSAGE_BUDGET, agent.max_tokens * CHARS_PER_TOKEN)
        opening = len(topic.initial_prompt or task)
        chars = len(system) + schemas + max(messages, opening)
        first = max(first, chars // CHARS_PER_TOKEN + agent.max_tokens)
    reply = max(a.max_tokens for a in agents)
    return PromptSize(first=first, peak=max(first, context_budget + reply))


# -- one endpoint ------------------------------------------------------------------

def _host(endpoint: str) -> str:
    return urllib.parse.urlparse(endpoint).netloc


def _get(url: str, api_key: str | None, payload: dict | None = None):
    try:
        return fetch_json(url, payload, timeout=PROBE_TIMEOUT, api_key=api_key)
    except EndpointError:
        return None


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def identify(endpoint: str, api_key: str | None = None, models_reply=None) -> ServerInfo:
    """Best effort from the routes a server has and the shapes it answers in."""
    root = base_url(endpoint)
    info = ServerInfo()
    models = models_reply if models_reply is not None else _get(root + "/v1/models", api_key)
    entries = []
    if models is not None and models.ok and isinstance(models.data, dict):
        entries = [m for m in models.data.get("data") or [] if isinstance(m, dict)]
    info.models = [str(m.get("id")) for m in entries if m.get("id")]
    info.model = info.models[0] if info.models else ""
    owners = {str(m.get("owned_by", "")) for m in entries}
    headers = {k.lower(): v for k, v in (models.headers if models is not None else {}).items()}
    if "openrouter.ai" in _host(endpoint):
        info.kind = "OpenRouter"
    elif "vllm" in owners:
        info.kind = "vLLM"
        info.n_ctx = next((_int(m.get("max_model_len")) for m in entries if _int(m.get("max_model_len"))), None)
        info.ctx_source = "/v1/models max_model_len"
    elif "llamacpp" in owners:
        info.kind = "llama.cpp"
    elif "me" in owners:
        info.kind = "llama-cpp-python"
    elif "organization_owner" in owners:
        info.kind = "LM Studio"
    elif owners & {"library", "ollama"}:
        info.kind = "Ollama"
    if info.kind in ("unknown", "llama.cpp"):
        props = _get(root + "/props", api_key)
        if props is not None and props.ok and isinstance(props.data, dict):
            settings = props.data.get("default_generation_settings")
            if isinstance(settings, dict) or "n_ctx" in props.data:
                info.kind = "llama.cpp"
                info.n_ctx = _int((settings or {}).get("n_ctx")) or _int(props.data.get("n_ctx"))
                info.ctx_source = "/props n_ctx"
                path = props.data.get("model_path")
                if isinstance(path, str) and path:
                    info.model = Path(path).name
    if info.kind in ("unknown", "Ollama"):
        version = _get(root + "/api/version", api_key)
        if version is not None and version.ok and isinstance(version.data, dict) and "version" in version.data:
            info.kind, info.version = "Ollama", str(version.data["version"])
    if info.kind == "Ollama":
        _ollama_context(root, api_key, info)
    elif info.kind == "LM Studio":
        lms = _get(root + "/api/v0/models", api_key)
        if lms is not None and lms.ok and isinstance(lms.data, dict):
            for m in lms.data.get("data") or []:
                if isinstance(m, dict) and _int(m.get("loaded_context_length")):
                    info.n_ctx, info.ctx_source = m["loaded_context_length"], "/api/v0/models loaded_context_length"
                    break
    elif info.kind == "OpenRouter":
        ctx = [_int(m.get("context_length")) for m in entries]
        info.n_ctx = next((c for c in ctx if c), None)
        info.ctx_source = "/v1/models context_length"
    if info.kind == "unknown" and "uvicorn" in headers.get("server", "").lower():
        info.kind = "an OpenAI-compatible server (uvicorn: vLLM or llama-cpp-python?)"
    return info


def _ollama_context(root: str, api_key: str | None, info: ServerInfo) -> None:
    """The context Ollama runs a model with: num_ctx in its parameters, or
    the size a loaded model was given (/api/ps); else its default applies."""
    if not info.model:
        return
    show = _get(root + "/api/show", api_key, {"model": info.model})
    if show is not None and show.ok and isinstance(show.data, dict):
        found = re.search(r"num_ctx\s+(\d+)", str(show.data.get("parameters") or ""))
        if found:
            info.n_ctx, info.ctx_source = int(found.group(1)), "/api/show num_ctx"
            return
    ps = _get(root + "/api/ps", api_key)
    if ps is not None and ps.ok and isinstance(ps.data, dict):
        for m in ps.data.get("models") or []:
            if isinstance(m, dict) and m.get("name") == info.model and _int(m.get("context_length")):
                info.n_ctx, info.ctx_source = m["context_length"], "/api/ps context_length"


def check_reachable(endpoint: str, api_key: str | None):
    """(Check, the /v1/models reply or None)."""
    url = base_url(endpoint) + "/v1/models"
    start = time.monotonic()
    try:
        reply = fetch_json(url, timeout=PROBE_TIMEOUT, api_key=api_key)
    except EndpointError as exc:
        reason = str(exc).split(": ", 1)[-1]
        return Check(FAIL, "reachable", f"nothing answers at {endpoint} ({reason})",
                     "start the server (`azclaw serve --local` for a local one), or correct --endpoint, "
                     "--agents or $AZCLAW_ENDPOINT"), None
    seconds = time.monotonic() - start
    if reply.status in (401, 403):
        return Check(FAIL, "reachable", f"{endpoint} refuses azclaw (HTTP {reply.status} on /v1/models)",
                     "set the API key in $AZCLAW_API_KEY"), reply
    if reply.ok and not isinstance(reply.data, dict):  # a web page, a proxy's login form, ...
        kind = next((v for k, v in reply.headers.items() if k.lower() == "content-type"), "") or "a body"
        said = " ".join(reply.text.split())[:60]
        return Check(FAIL, "reachable", f"{endpoint} answers, but not as an OpenAI-compatible server "
                     f"(/v1/models gave {kind.split(';')[0]}, not a JSON object: {said!r})",
                     "point --endpoint at the model server itself (its host, port and /v1 path)"), None
    how = f"/v1/models in {seconds:.2f} s" if reply.ok else f"HTTP {reply.status} on /v1/models"
    return Check(OK, "reachable", f"{endpoint} answers ({how})"), reply


def check_server(endpoint: str, info: ServerInfo, model: str) -> Check:
    where = _host(endpoint)
    served = info.model or "no model listed"
    detail = f"{info.kind}{' ' + info.version if info.version else ''} at {where} serves {served}"
    if len(info.models) > 1:
        detail += f" (of {len(info.models)} listed)"
    names_matter = info.kind in ("vLLM", "Ollama", "OpenRouter", "LM Studio")
    if info.models and model not in info.models and names_matter:
        return Check(WARN, "server", detail + f"; azclaw sends model {model!r}, which it does not list",
                     f"pass --model {info.models[0]}")
    if info.kind == "unknown":  # nothing to fix: the checks below tell whether it works
        return Check(OK, "server", f"an OpenAI-compatible server at {where} (kind not recognised) "
                                   f"serves {served}")
    return Check(OK, "server", detail)


def check_tool_calls(endpoint: str, model: str, api_key: str | None, info: ServerInfo,
                     max_tokens: int = 256, timeout: float = TOOL_TIMEOUT) -> Check:
    """Send one real request that offers ``remember`` and asks for it."""
    where = _host(endpoint)
    tool = build_default_registry().get("remember")
    client = LLMClient(endpoint, model, api_key, timeout=timeout, retries=0)
    messages = [{"role": "system", "content": "You are a careful assistant. Use your tools when asked."},
                {"role": "user", "content": TOOL_PROMPT}]
    try:
        reply = client.chat(messages, [tool.schema()], max_tokens=max_tokens, temperature=0.0)
    except EndpointError as exc:
        message = str(exc)
        fix = "check the server's log for this request"
        if " 404 " in message and "model" in message.lower():
            fix = f"pass --model NAME with a model the server serves ({', '.join(info.models[:3]) or '?'})"
        elif " 400 " in message or " 500 " in message:
            fix = NO_TOOLS_FIX.get(info.kind, "the server rejects requests with tools; use a server and "
                                              "model with tool calling")
        return Check(FAIL, "tool calls", f"a chat request with one tool to {where} failed: {message}", fix)
    names = ", ".join(dict.fromkeys(c.name for c in reply.tool_calls))
    broken = [c for c in reply.tool_calls if c.arguments is None]
    if reply.tool_calls and broken:
        return Check(WARN, "tool calls", f"{where} called {names} with malformed arguments "
                     f"({broken[0].error}); azclaw returns such errors to the model, which may retry",
                     "a larger or tool-tuned model makes fewer of these")
    if reply.tool_calls and reply.text_calls:
        return Check(OK, "tool calls", f"{where} writes tool calls as text, and azclaw parses them ({names})")
    if reply.tool_calls:
        return Check(OK, "tool calls", f"{where} returns structured tool_calls ({names})")
    said = " ".join(reply.text.split())[:80]
    detail = (f"{where} returned no tool call " + (f"(it wrote: {said!r})" if said else "(an empty reply)")
              + "; agents will talk, but cannot remember, recall or write files")
    return Check(WARN, "tool calls", detail, NO_TOOLS_FIX.get(
        info.kind, "use a model and server with tool calling, or a model that writes "
                   '<tool_call>{"name": ..., "arguments": {...}}</tool_call>'))


def check_tool_modes(endpoint: str, model: str, api_key: str | None, max_tokens: int = 256,
                     timeout: float = TOOL_TIMEOUT) -> Check:
    """Ask for the same tool call in each tool mode (native, text,
    constrained) and name the mode that works best: native when it works,
    else constrained, else text."""
    tool = build_default_registry().get("remember")
    client = LLMClient(endpoint, model, api_key, timeout=timeout, retries=0, max_outage=0.0)
    works: dict[str, str] = {}
    for mode in ("native", "text", "constrained"):
        step = Step.of(mode, [tool], max_tokens, must_call=True)
        system = "You are a careful assistant. Use your tools when asked.\n" + instructions(mode, [tool], max_tokens)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": TOOL_PROMPT}]
        try:
            completion = client.chat(messages, max_tokens=max_tokens, temperature=0.0, **step.options())
        except EndpointError as exc:
            works[mode] = f"failed ({' '.join(str(exc).split())[:80]})"
            continue
        reading = read_reply(step, completion)
        good = [c for c in reading.calls if c.name == "remember" and c.arguments is not None]
        works[mode] = "ok" if good else ("malformed call" if reading.calls or reading.error else "no call")
    best = next((m for m in ("native", "constrained", "text") if works[m] == "ok"), None)
    detail = ", ".join(f"{m}: {w}" for m, w in works.items())
    if best is None:
        return Check(WARN, "tool mode", f"{_host(endpoint)}: no mode gave a tool call ({detail})",
                     "use a model and server with tool calling or JSON-schema output")
    return Check(OK, "tool mode", f"{_host(endpoint)}: {detail}; recommended: --tool-mode {best}"
                 + (" (auto starts native and switches to constrained by itself)" if best != "text" else ""))


def check_context(endpoint: str, info: ServerInfo, size: PromptSize) -> Check:
    where = _host(endpoint)
    want = size.peak
    fix = CONTEXT_FIX.get(info.kind, "raise the server's context length to {n} tokens").format(n=want)
    if info.kind == "Ollama":
        fix = OLLAMA_FIX.format(n=max(want, 8192))
        if info.n_ctx is None:
            return Check(WARN, "context", f"Ollama at {where} runs {info.model or 'the model'} with its default "
                         f"context (2048 or 4096 tokens, by version), and its OpenAI endpoint silently cuts "
                         f"longer prompts; a turn starts at ~{size.first} tokens and can reach ~{want}", fix)
    if info.n_ctx is None:
        return Check(WARN, "context", f"{where} does not say its context length, so azclaw cannot fit requests "
                     f"to it before the server refuses one; make sure it allows ~{want} tokens (a turn starts "
                     f"at ~{size.first})", "or lower --context-budget to what the server allows")
    detail = f"{where} has {info.n_ctx} tokens ({info.ctx_source}); a turn starts at ~{size.first} tokens"
    if info.n_ctx < size.first:
        return Check(FAIL, "context", detail + " -- more than fits"
                     + (" (Ollama cuts it silently)" if info.kind == "Ollama" else ""),
                     fix + ", or lower --max-tokens")
    if info.n_ctx < want:
        return Check(WARN, "context", detail + f" and tool results can grow it to ~{want}",
                     fix + " (azclaw cuts old tool results beyond its budget, but the server may fail first)")
    return Check(OK, "context", detail + f" and can grow to ~{want}")


def check_endpoint(endpoint: str, model: str = "default", api_key: str | None = None,
                   size: PromptSize | None = None, max_tokens: int = 256,
                   timeout: float = TOOL_TIMEOUT, n_ctx: int | None = None) -> list[Check]:
    """Every check of one endpoint; after a FAIL to reach it, nothing else.
    ``n_ctx`` is the context when azclaw knows it (it started the server)."""
    reachable, models = check_reachable(endpoint, api_key)
    if reachable.status == FAIL:
        return [reachable]
    info = identify(endpoint, api_key, models)
    if info.n_ctx is None and n_ctx:
        info.n_ctx, info.ctx_source = n_ctx, "azclaw started it with --ctx"
    checks = [reachable, check_server(endpoint, info, model),
              check_tool_calls(endpoint, model, api_key, info, min(max_tokens, 256), timeout),
              check_tool_modes(endpoint, model, api_key, min(max_tokens, 256), timeout)]
    if size is not None:
        checks.append(check_context(endpoint, info, size))
    return checks


# -- the machine ------------------------------------------------------------------

def check_folder(label: str, path: str | Path) -> Check:
    """A folder is fine when it exists and takes a file, or can be created."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return Check(FAIL, f"{label} folder", f"{path}: {probe} is a file, not a folder",
                     f"move {probe} away or choose another folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return Check(FAIL, f"{label} folder", f"{path}: cannot write in {probe} ({exc.strerror or exc})",
                     "choose a folder you can write, or fix its permissions")
    state = "writable" if probe == path else f"will be created (in writable {probe})"
    return Check(OK, f"{label} folder", f"{path} {state}")


def check_sandbox(output_dir="./output", log_dir="./logs", agents_dir="./agents") -> list[Check]:
    """The run_python sandbox as a self-test finds it, and an output folder
    that must not hold the memories or the log."""
    checks = []
    try:
        sandbox.check_output_folder(output_dir, agents_dir, log_dir)
    except ConfigError as exc:
        checks.append(Check(FAIL, "output apart", str(exc).split(": ", 1)[1],
                            "choose an --output apart from --agents-dir, --log-dir and your home folder"))
    level = confine.probe_sandbox()
    if level.confined:
        checks.append(Check(OK, "python sandbox", level.text))
    else:
        why = "; ".join(level.problems) or f"only {level.text} works here"
        checks.append(Check(WARN, "python sandbox", f"no operating-system sandbox: run_python is refused ({why})",
                            "a Linux kernel with Landlock (5.13+, on in most distributions); or accept the risk "
                            "with --unsandboxed-python, or turn it off with --no-run-python"))
    return checks


def check_agentazall() -> Check:
    try:
        importlib.import_module("agentazall")
    except Exception as exc:  # any import failure means memory will not work
        return Check(FAIL, "agentazall", f"cannot import agentazall ({exc})", "pip install 'agentazall>=1.0.24'")
    try:
        version = importlib.metadata.version("agentazall")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    return Check(OK, "agentazall", f"importable ({version})")


def diagnose(agents: list[Agent], topic: Topic | None = None, task: str = "", output_dir="./output",
             log_dir="./logs", agents_dir="./agents", context_budget: int = CONTEXT_BUDGET,
             timeout: float = TOOL_TIMEOUT, n_ctx: int | None = None) -> Diagnosis:
    """Check a team's endpoints (each once) and the machine it runs on."""
    diagnosis = Diagnosis()
    size = prompt_size(agents, topic, task, context_budget)
    seen: set[tuple] = set()
    for agent in agents:
        for endpoint in agent.endpoints:
            key = (endpoint, agent.model, agent.client.api_key)
            if key in seen:
                continue
            seen.add(key)
            diagnosis.checks += check_endpoint(endpoint, agent.model, agent.client.api_key, size,
                                               agent.max_tokens, timeout, n_ctx)
    diagnosis.checks += machine_checks(output_dir, log_dir, agents_dir)
    return diagnosis


def machine_checks(output_dir="./output", log_dir="./logs", agents_dir="./agents") -> list[Check]:
    return [check_folder("agents", agents_dir), check_folder("output", output_dir),
            check_folder("log", log_dir), *check_sandbox(output_dir, log_dir, agents_dir), check_agentazall()]


def diagnose_local(server, make_team, topic: Topic | None = None, task: str = "", output_dir="./output",
                   log_dir="./logs", agents_dir="./agents", timeout: float = TOOL_TIMEOUT) -> Diagnosis:
    """Start ``server`` (a LocalServer), check it with the team
    ``make_team(server)`` returns, and stop it again."""
    start = time.monotonic()
    try:
        server.start()
    except AzclawError as exc:
        first = str(exc).splitlines()[0].rstrip(":")
        if "azclaw[local]" in first:  # the extra is missing: the message ends with the install line
            first, fix = first.split(": ", 1)
        else:
            fix = "read the server's log named here; --threads 1 or a smaller --ctx may help on a small machine"
        check = Check(FAIL, "local server", first, fix)
        return Diagnosis([check, *machine_checks(output_dir, log_dir, agents_dir)])
    try:
        started = Check(OK, "local server", f"{server.describe()} answers at {server.endpoint} "
                                            f"(ready in {time.monotonic() - start:.1f} s)")
        diagnosis = diagnose(make_team(server), topic, task, output_dir, log_dir, agents_dir,
                             context_budget=server.context_budget, timeout=timeout, n_ctx=server.n_ctx)
        diagnosis.checks.insert(0, started)
        return diagnosis
    finally:
        server.stop()
