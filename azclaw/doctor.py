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
import os
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .tools import confine, sandbox
from .agent import Agent
from .tools.builtin import build_default_registry
from .errors import AzclawError, ConfigError, EndpointError
from .client.completion import error_message
from .client.endpoint import Endpoint
from .client.llm import API_KEY_ENV, LLMClient, fetch_json
from .client.probe import PROBE_TIMEOUT, context_size, entries_of, unserved
from .options import RunOptions
from .prompt import CHARS_PER_TOKEN, system_prompt
from .safetext import one_line
from .toolmodes import AUTO_PROSE_TURNS, Step, instructions, read_reply, starting_mode, step_move

DEFAULTS = RunOptions()
from .topic import Topic

OK, WARN, FAIL = "OK", "WARN", "FAIL"
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
    entries: list[dict] = field(default_factory=list)  # /v1/models as listed
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
                context_budget: int = DEFAULTS.context_budget) -> PromptSize:
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
        messages = len(agents) * min(DEFAULTS.message_chars, agent.max_tokens * CHARS_PER_TOKEN)
        opening = len(topic.initial_prompt or task)
        chars = len(system) + schemas + max(messages, opening)
        first = max(first, chars // CHARS_PER_TOKEN + agent.max_tokens)
    reply = max(a.max_tokens for a in agents)
    return PromptSize(first=first, peak=max(first, context_budget + reply))


# -- one endpoint ------------------------------------------------------------------

def _host(endpoint: str) -> str:
    return urllib.parse.urlparse(endpoint).netloc


def _get(url: str, api_key: str | None, payload: dict | None = None, timeout: float = PROBE_TIMEOUT):
    try:
        return fetch_json(url, payload, timeout=timeout, api_key=api_key)
    except EndpointError:
        return None


def identify(endpoint: str, api_key: str | None = None, models_reply=None) -> ServerInfo:
    """Which server it is, best effort, from the routes it has and the
    shapes it answers in (the context size is ``probe.context_size``'s)."""
    root = Endpoint.parse(endpoint).root
    info = ServerInfo()
    models = models_reply if models_reply is not None else _get(root + "/v1/models", api_key)
    entries = (entries_of(models.data) or []) if models is not None and models.ok else []
    info.entries = entries
    info.models = [m["id"] for m in entries]
    info.model = info.models[0] if info.models else ""
    owners = {str(m.get("owned_by", "")) for m in entries}
    headers = {k.lower(): v for k, v in (models.headers if models is not None else {}).items()}
    if "openrouter.ai" in _host(endpoint):
        info.kind = "OpenRouter"
    elif "vllm" in owners:
        info.kind = "vLLM"
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
            if isinstance(props.data.get("default_generation_settings"), dict) or "n_ctx" in props.data:
                info.kind = "llama.cpp"
                path = props.data.get("model_path")
                if isinstance(path, str) and path:
                    info.model = Path(path).name
    if info.kind in ("unknown", "Ollama"):
        version = _get(root + "/api/version", api_key)
        if version is not None and version.ok and isinstance(version.data, dict) and "version" in version.data:
            info.kind, info.version = "Ollama", str(version.data["version"])
    if info.kind == "unknown" and "uvicorn" in headers.get("server", "").lower():
        info.kind = "an OpenAI-compatible server (uvicorn: vLLM or llama-cpp-python?)"
    return info


def _said(reply) -> str:
    status = reply.data.get("status") if isinstance(reply.data, dict) else None
    return status if isinstance(status, str) and status else error_message(reply.data, reply.text)


def _busy(endpoint: str, detail: str) -> Check:
    return Check(WARN, "reachable", f"{endpoint} is busy: {detail}; its other checks were skipped",
                 "run azclaw doctor again when the server is idle (a run started now waits its turn)")


def check_reachable(endpoint: str, api_key: str | None, timeout: float = PROBE_TIMEOUT):
    """(Check, the /v1/models reply or None). A server that takes the
    connection but does not answer in ``timeout`` seconds, or says it has no
    free slot, is busy (with another run), not missing."""
    root = Endpoint.parse(endpoint).root
    url = root + "/v1/models"
    start = time.monotonic()
    try:
        reply = fetch_json(url, timeout=timeout, api_key=api_key)
    except EndpointError as exc:
        reason = str(exc).split(": ", 1)[-1]
        if getattr(exc, "kind", "") == "timeout":
            health = _get(root + "/health", api_key, timeout=timeout / 2)
            answered = (f"it answers /health (HTTP {health.status}) but not /v1/models within {timeout:g} s"
                        if health is not None else
                        f"it takes connections but answers nothing within {timeout:g} s")
            return _busy(endpoint, answered + " (llama-cpp-python answers nothing while it generates; "
                                              "a hung server looks the same)"), None
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
    health = _get(root + "/health", api_key, timeout=timeout) if reply.ok else reply
    if health is not None and health.status in (429, 503):
        said = _said(health)
        if "load" in said.lower():
            return Check(WARN, "reachable", f"{endpoint} is loading its model (HTTP {health.status}: {said}); "
                         "its other checks were skipped", "run azclaw doctor again once it has loaded"), None
        return _busy(endpoint, f"HTTP {health.status} ({said})"), None
    how = f"/v1/models in {seconds:.2f} s" if reply.ok else f"HTTP {reply.status} on /v1/models"
    return Check(OK, "reachable", f"{endpoint} answers ({how})"), reply


def check_server(endpoint: str, info: ServerInfo, model: str) -> Check:
    """Which server and model; FAIL where the run would refuse the model
    name before round 1 (the same rule: ``probe.unserved``)."""
    where = _host(endpoint)
    served = info.model or "no model listed"
    detail = f"{info.kind}{' ' + info.version if info.version else ''} at {where} serves {served}"
    if len(info.models) > 1:
        detail += f" (of {len(info.models)} listed)"
    offered = unserved(model, info.entries)
    if offered:
        shown = ", ".join(offered[:5]) + (f" (and {len(offered) - 5} more)" if len(offered) > 5 else "")
        what = ("lists several models and none is named 'default'" if model == "default"
                else f"does not serve model {model!r}")
        return Check(FAIL, "server", f"{detail}; it {what}, so a run stops before round 1 (it serves: {shown})",
                     f"pass --model {offered[0]}")
    if info.kind == "unknown":  # nothing to fix: the checks below tell whether it works
        return Check(OK, "server", f"an OpenAI-compatible server at {where} (kind not recognised) "
                                   f"serves {served}")
    return Check(OK, "server", detail)


@dataclass
class ModeTry:
    """What one request in one tool mode gave."""

    state: str  # ok, malformed, no call, failed, busy
    said: str  # for the line
    error: str = ""  # the failed request's message
    switches: bool = False  # an auto agent would go constrained after this reply


def try_mode(client: LLMClient, mode: str, max_tokens: int) -> ModeTry:
    """Ask for the ``remember`` call in ``mode``, as a turn's first step does."""
    tool = build_default_registry().get("remember")
    step = Step.of(mode, [tool], max_tokens, must_call=True)
    system = "You are a careful assistant. Use your tools when asked.\n" + instructions(mode, [tool], max_tokens)
    messages = [{"role": "system", "content": system.strip()}, {"role": "user", "content": TOOL_PROMPT}]
    try:
        completion = client.chat(messages, max_tokens=max_tokens, temperature=0.0, **step.options())
    except EndpointError as exc:
        if getattr(exc, "kind", "") in ("timeout", "stall"):
            return ModeTry("busy", "no reply in time", str(exc))
        return ModeTry("failed", f"failed ({' '.join(str(exc).split())[:80]})", str(exc))
    reading = read_reply(step, completion)
    switches = step_move(step, completion, reading, []) is not None
    names = ", ".join(dict.fromkeys(c.name for c in reading.calls if c.name))
    if any(c.name == "remember" and c.arguments is not None for c in reading.calls):
        how = ("tool calls as text, and azclaw parses them" if completion.text_calls
               else "structured tool_calls" if mode == "native" else "a valid call")
        return ModeTry("ok", f"{how} ({names})")
    if reading.calls or reading.error:
        why = next((c.error for c in reading.calls if c.error), "") or reading.error or f"called {names}"
        return ModeTry("malformed", f"a malformed call ({why})", switches=switches)
    said = " ".join(completion.text.split())[:80]
    return ModeTry("no call", "no tool call " + (f"(it wrote: {said!r})" if said else "(an empty reply)"),
                   switches=switches)


def check_tool_calls(endpoint: str, model: str, api_key: str | None, info: ServerInfo, tool_mode: str = "auto",
                     max_tokens: int = 256, timeout: float = TOOL_TIMEOUT) -> Check:
    """Does a tool call come back in the mode the agents use? One real
    request in that mode (``auto``: native, then constrained where auto
    would switch); the other modes only when it does not work, to name the
    one that does. One line per endpoint, one verdict."""
    where = _host(endpoint)
    client = LLMClient(endpoint, model, api_key, timeout=timeout, retries=0, max_outage=0.0)
    tries: dict[str, ModeTry] = {}

    def attempt(mode: str) -> ModeTry:
        if mode not in tries:
            tries[mode] = try_mode(client, mode, max_tokens)
        return tries[mode]

    first = attempt(starting_mode(tool_mode))
    if first.state == "busy":
        return Check(WARN, "tool calls", f"{where} did not answer a chat request within {timeout:g} s: busy with "
                     "another run's requests (they are served first), or slower than that",
                     "run azclaw doctor again when the server is idle, or allow more time with --timeout")
    used = starting_mode(tool_mode)
    if tool_mode == "auto" and first.state != "ok" and first.switches:
        used = "constrained"  # what auto does after a call that does not parse, or a cut-off reply
    result = attempt(used)
    if result.state == "ok":
        how = f" (auto switches to it after native gave {first.said})" if used != starting_mode(tool_mode) else ""
        return Check(OK, "tool calls", f"{where}, tool mode {used}: {result.said}{how}")
    for mode in ("native", "constrained", "text"):
        if attempt(mode).state == "busy":
            break
    best = next((m for m in ("native", "constrained", "text") if tries.get(m) and tries[m].state == "ok"), None)
    tried = ", ".join(f"{m}: {t.said}" for m, t in tries.items())
    if best is not None:
        return Check(WARN, "tool calls", f"{where}: with --tool-mode {tool_mode} agents will not call tools "
                     f"({tried})", f"pass --tool-mode {best}"
                     + (f" (auto starts native and reaches constrained only after {AUTO_PROSE_TURNS} turns without a "
                        f"call in native and {AUTO_PROSE_TURNS} in text)"
                        if best == "constrained" and tool_mode == "auto" else ""))
    failed = next((t for m, t in sorted(tries.items(), key=lambda mt: mt[0] != used) if t.state == "failed"), None)
    if failed is not None:  # and no mode works
        message = failed.error
        fix = "check the server's log for this request"
        if " 404 " in message and "model" in message.lower():
            fix = f"pass --model NAME with a model the server serves ({', '.join(info.models[:3]) or '?'})"
        elif " 400 " in message or " 500 " in message:
            fix = NO_TOOLS_FIX.get(info.kind, "the server rejects requests with tools; use a server and "
                                              "model with tool calling")
        return Check(FAIL, "tool calls", f"a chat request with one tool to {where} failed: {message}", fix)
    return Check(WARN, "tool calls", f"{where}: no tool mode gave a tool call ({tried}); agents will talk, but "
                 "cannot remember, recall or write files",
                 NO_TOOLS_FIX.get(info.kind, "use a model and server with tool calling, or JSON-schema output"))


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
                   timeout: float = TOOL_TIMEOUT, n_ctx: int | None = None, tool_mode: str = "auto") -> list[Check]:
    """Every check of one endpoint; after a FAIL to reach it (or a busy
    server), nothing else. The context is the one a run finds
    (``probe.context_size``); ``n_ctx`` where the server does not tell
    and azclaw knows it (it started the server)."""
    reachable, models = check_reachable(endpoint, api_key)
    if reachable.status != OK:
        return [reachable]
    info = identify(endpoint, api_key, models)
    found = context_size(Endpoint.parse(endpoint).root, model, api_key)
    if found is not None:
        info.n_ctx, info.ctx_source = found.tokens, found.source
    elif n_ctx:
        info.n_ctx, info.ctx_source = n_ctx, "azclaw started it with --ctx"
    checks = [reachable, check_server(endpoint, info, model),
              check_tool_calls(endpoint, model, api_key, info, tool_mode, min(max_tokens, 256), timeout)]
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
    gaps = sandbox_gaps(level)
    if level.confined and gaps:
        checks.append(Check(WARN, "python sandbox", f"{level.text}; but {'; '.join(gaps)}",
                            "allow unprivileged user namespaces (kernel.unprivileged_userns_clone=1, or the "
                            "AppArmor userns restriction off) or run on a kernel with overlayfs and idmapped "
                            "mounts (5.19+)"))
    elif level.confined:
        checks.append(Check(OK, "python sandbox", level.text))
    else:
        why = "; ".join(level.problems) or f"only {level.text} works here"
        checks.append(Check(WARN, "python sandbox", f"no operating-system sandbox: run_python is refused ({why})",
                            "a Linux kernel with Landlock (5.13+, on in most distributions); or accept the risk "
                            "with --unsandboxed-python, or turn it off with --no-run-python"))
    return checks


def sandbox_gaps(level) -> list[str]:
    """What a confined level lacks of the per-call protections: the write
    quota, and (as root) an ordinary uid for the code."""
    gaps = []
    if not level.quota:
        gaps.append("no write quota per call (a mount namespace or overlay was refused)")
    if level.uid == 0 and os.geteuid() == 0:
        gaps.append("the code runs as root without capabilities (no idmapped mounts here)")
    return gaps


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
             log_dir="./logs", agents_dir="./agents", context_budget: int = DEFAULTS.context_budget,
             timeout: float = TOOL_TIMEOUT, n_ctx: int | None = None) -> Diagnosis:
    """Check a team's endpoints (each once) and the machine it runs on."""
    diagnosis = Diagnosis()
    size = prompt_size(agents, topic, task, context_budget)
    seen: set[tuple] = set()
    for agent in agents:
        api_key = agent.api_key or os.environ.get(API_KEY_ENV) or None
        for endpoint in agent.endpoints:
            key = (endpoint.chat, agent.model, api_key)
            if key in seen:
                continue
            seen.add(key)
            diagnosis.checks += check_endpoint(endpoint.chat, agent.model, api_key, size, agent.max_tokens, timeout,
                                               n_ctx, agent.tool_mode)
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
