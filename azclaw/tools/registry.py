"""The tool registry: declaring tools, offering them by role, running calls.

Every mistake a model can make with a tool (an unknown name, a tool it may
not use, arguments that are not JSON, a missing or mistyped argument, a tool
that raises) becomes a ``ToolResult`` with ``ok=False`` that the model reads;
nothing here raises for a model's mistake.

``ToolRegistry.execute`` is where every tool runs, built-in, custom or from
an MCP server: the one place that checks the role, the arguments and, when
the run has an approver (``--approve``), asks before a tool that changes
something (every tool but the ones registered with ``approve=False``).
"""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, ToolError

log = logging.getLogger("azclaw")

RESULT_LIMIT = 4000
_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
               "array": list, "object": dict}


@dataclass(frozen=True)
class Effect:
    """What a call changed, as the tool tells it (``ToolContext.note``):
    ``kind`` "memory" (``target`` the title), "file" (the path) or "recall"
    (the query); ``status`` e.g. "new", "repeat", "created", "changed",
    "unchanged", "found", "nothing"."""

    kind: str
    target: str = ""
    status: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "target": self.target, "status": self.status}

    @classmethod
    def from_dict(cls, data) -> "Effect | None":
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str) or not data["kind"]:
            return None
        return cls(data["kind"], str(data.get("target") or ""), str(data.get("status") or ""))


@dataclass
class ToolContext:
    """What a tool may know about the call: passed as the reserved ``_ctx``."""

    agent: str
    can_write: bool
    output_dir: Path
    source_dirs: list[Path]
    memory: Any = None  # a TeamMemory
    round: int = 0
    # True / "sandboxed": only under a verified OS sandbox; "unsandboxed": also without one; False / "off"
    run_python_enabled: bool | str = True
    approve: Callable[[str, str], bool] | None = None
    effect: Effect | None = None  # what the call running now changed (``note``)

    def note(self, kind: str, target: str = "", status: str = "") -> None:
        """Say what this call changed (a memory stored, a file written)."""
        self.effect = Effect(kind, target, status)


@dataclass
class ToolResult:
    """The text a tool call gives back to the model."""

    call_id: str
    name: str
    content: str
    ok: bool = True
    duplicate: bool = False
    effect: Effect | None = None


@dataclass
class Tool:
    """A tool: its schema, who may use it, and the function that runs it."""

    name: str
    description: str
    params: dict[str, dict]
    required: list[str]
    func: Callable[..., Any]
    writer_only: bool = False
    parameters: dict | None = None  # the whole JSON schema of a tool described elsewhere (from_schema)
    approve: bool = True  # asks the run's approver first (False: the tool changes nothing)
    preview: Callable[..., str] | None = None  # what the approver reads: preview(args, ctx); default the JSON
    team_params: tuple[str, ...] = ()  # arguments that name a teammate: an enum of the run's team (``for_team``)
    ready: Callable[["ToolContext"], bool] | None = None  # can it do anything now? (None: always; ``is_ready``)
    takes_ctx: bool = field(init=False, default=False)  # the function has a ``_ctx`` parameter

    def __post_init__(self):
        self.takes_ctx = "_ctx" in _parameters(self.func)

    def for_team(self, names: list[str]) -> "Tool":
        """The tool as one run offers it: each of ``team_params`` is one of
        ``names`` or ``"me"`` in its schema (a model cannot name someone
        who is not there)."""
        if not self.team_params:
            return self
        choices = list(dict.fromkeys([*names, "me"]))
        params = {n: ({**spec, "type": "string", "enum": choices} if n in self.team_params else spec)
                  for n, spec in self.params.items()}
        return replace(self, params=params)


    @classmethod
    def from_schema(cls, name: str, description: str, parameters: dict, func: Callable[..., Any],
                    writer_only: bool = False, approve: bool = True) -> "Tool":
        """A tool whose arguments another program described as a JSON schema
        (an MCP server's ``inputSchema``); ``func`` gets them as keywords.
        The schema is offered as given; arguments are checked for what it
        requires and for the simple types it names, the rest is left to ``func``."""
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise ConfigError(f"tool {name!r}: the parameters schema must be a JSON object schema")
        props, required = parameters.get("properties", {}), parameters.get("required", [])
        if not isinstance(props, dict) or not isinstance(required, list):
            raise ConfigError(f"tool {name!r}: 'properties' must be an object and 'required' a list")
        params = {k: v if isinstance(v, dict) else {} for k, v in props.items()}
        required = [r for r in required if isinstance(r, str) and r in params]
        return cls(name, description or "", params, required, func, writer_only,
                   {"type": "object", "properties": {}, **parameters}, approve=approve)

    def schema(self) -> dict:
        parameters = self.parameters or {"type": "object", "properties": self.params, "required": self.required}
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": parameters}}

    def is_ready(self, ctx: "ToolContext") -> bool:
        """Whether a call could find or do anything now (a recall with no
        memory stored, a listing with no file, cannot); a check that fails says yes."""
        if self.ready is None:
            return True
        try:
            return bool(self.ready(ctx))
        except Exception:  # a broken check must not hide a tool
            log.debug("tool %r: its ready check raised", self.name, exc_info=True)
            return True

    def signature(self) -> str:
        return f"{self.name}(" + ", ".join(
            n if n in self.required else f"{n}?" for n in self.params) + ")"


def _param_schema(name: str, spec: Any) -> dict:
    if isinstance(spec, str):
        if spec not in _JSON_TYPES:
            raise ConfigError(f"tool parameter {name!r}: unknown type {spec!r}, "
                              f"expected one of: {', '.join(_JSON_TYPES)}")
        return {"type": spec}
    if isinstance(spec, dict) and spec.get("type", "string") in _JSON_TYPES:
        return dict(spec)
    raise ConfigError(f"tool parameter {name!r}: expected a type name or a JSON schema")


def _required_from(func: Callable, params: dict) -> list[str]:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return list(params)
    return [n for n in params
            if n in sig.parameters and sig.parameters[n].default is inspect.Parameter.empty]


def _check_arguments(tool: Tool, args: dict) -> str:
    """Return why ``args`` do not fit ``tool`` ('' when they do); convert
    numbers given as strings, as small models often send them."""
    open_ended = tool.parameters is not None and tool.parameters.get("additionalProperties", False) is not False
    unknown = [] if open_ended else [k for k in args if k not in tool.params]
    if unknown:
        return f"unknown argument(s) {', '.join(map(repr, unknown))}"
    missing = [k for k in tool.required if k not in args]
    if missing:
        return f"missing required argument(s) {', '.join(map(repr, missing))}"
    for key, value in args.items():
        # a schema from elsewhere may name no type, several, or "null": those are its owner's to check
        expected = tool.params.get(key, {}).get("type", "string" if tool.parameters is None else None)
        if not isinstance(expected, str) or expected not in _JSON_TYPES:
            continue
        if expected in ("integer", "number") and isinstance(value, str):
            try:
                args[key] = int(value) if expected == "integer" else float(value)
                continue
            except ValueError:
                pass
        if expected == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
            args[key] = str(value)
            continue
        ok = isinstance(value, _JSON_TYPES[expected])
        if expected in ("integer", "number") and isinstance(value, bool):
            ok = False
        if not ok:
            return f"argument {key!r} must be {expected}, got {type(value).__name__}"
    return ""


class ToolRegistry:
    """Named tools. ``@registry.tool(name, description, params)`` adds one;
    the decorated function stays callable as it was."""

    def __init__(self):
        self._tools: dict[str, Tool] = {}
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []
        self.result_limit = RESULT_LIMIT

    def tool(self, name: str, description: str, params: dict | None = None,
             writer_only: bool = False, approve: bool = True, preview: Callable[..., str] | None = None,
             team_params: tuple[str, ...] = (), ready: Callable[[ToolContext], bool] | None = None) -> Callable:
        """Decorator: register ``func`` as tool ``name``. ``params`` maps each
        argument to a JSON type name (``{"query": "string"}``) or a JSON schema.
        Arguments without a default in the function are required. A function
        parameter named ``_ctx`` receives the ToolContext. With ``--approve``
        a person is asked before every call unless ``approve=False`` (a tool
        that only reads); ``preview(args, ctx)`` is what they read (default:
        the arguments). ``team_params`` name arguments that take a
        teammate's name: each run offers them as an enum of its team and "me".
        ``ready(ctx)`` says whether a call could do anything now: a
        constrained step offers the tool only then."""
        def decorate(func: Callable) -> Callable:
            schema = {k: _param_schema(k, v) for k, v in (params or {}).items()}
            _check_declaration(name, func, schema)
            unknown = [p for p in team_params if p not in schema]
            if unknown:
                raise ConfigError(f"tool {name!r}: team_params names {unknown[0]!r}, which is not a parameter")
            self.add(Tool(name, description, schema, _required_from(func, schema), func, writer_only,
                          approve=approve, preview=preview, team_params=tuple(team_params), ready=ready))
            return func
        return decorate

    def add(self, tool: Tool) -> None:
        with self._lock:
            self._tools[tool.name] = tool

    def on_close(self, release: Callable[[], None]) -> None:
        """Call ``release`` when the registry is closed (a tool's server, a connection)."""
        self._closers.append(release)

    def close(self) -> None:
        """Release what the tools hold, newest first; safe to call twice."""
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> "ToolRegistry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def allowed(self, can_write: bool, only: list[str] | None = None) -> list[Tool]:
        """The tools an agent may use: writer-only tools need ``can_write``;
        ``only`` narrows further (it can never widen)."""
        return [t for t in self._tools.values()
                if (can_write or not t.writer_only) and (only is None or t.name in only)]

    def execute(self, call, ctx: ToolContext, allowed: list[Tool]) -> ToolResult:
        """Run one ToolCall for an agent allowed ``allowed``; never raises for
        a model's mistake."""
        def fail(message: str) -> ToolResult:
            return ToolResult(call.id, call.name, f"ERROR: {message}", ok=False)

        names = [t.name for t in allowed]
        # a tool offered for this run only (the finish line's done) is in ``allowed``, not in the registry
        tool = next((t for t in allowed if t.name == call.name), None) or self._tools.get(call.name)
        if tool is None:
            return fail(f"unknown tool {call.name!r}; available tools: {', '.join(names)}")
        if tool.name not in names:
            why = " (only the writer role may use it)" if tool.writer_only and not ctx.can_write else ""
            return fail(f"tool {call.name!r} is not available to {ctx.agent}{why}; "
                        f"available tools: {', '.join(names)}")
        if call.arguments is None:
            return fail(f"{call.error}; call it as {tool.signature()} with a JSON object")
        args = dict(call.arguments)
        problem = _check_arguments(tool, args)
        if problem:
            return fail(f"{problem}; call it as {tool.signature()}")
        ctx.effect = None
        try:
            if ctx.approve is not None and tool.approve and not ctx.approve(tool.name, _preview(tool, args, ctx)):
                return fail(f"{tool.name} was refused by the person supervising this run")
            value = tool.func(**args, **({"_ctx": ctx} if tool.takes_ctx else {}))
        except ToolError as exc:
            return fail(str(exc))
        except Exception as exc:  # a tool's bug must not end a long run; the operator gets the traceback
            log.warning("tool %r raised %s for %s", tool.name, type(exc).__name__, ctx.agent, exc_info=True)
            return fail(f"tool {tool.name!r} failed: {type(exc).__name__}: {exc}")
        return ToolResult(call.id, call.name, self._cut(value), effect=ctx.effect)

    def _cut(self, value: Any) -> str:
        text = value if isinstance(value, str) else str(value)
        if len(text) > self.result_limit:
            dropped = len(text) - self.result_limit
            text = text[: self.result_limit] + f"\n[... {dropped} more characters cut]"
        return text


def _preview(tool: Tool, args: dict, ctx: ToolContext) -> str:
    """What the approver reads before ``tool`` runs with ``args``."""
    if tool.preview is not None:
        return tool.preview(args, ctx)
    import json
    return json.dumps(args, ensure_ascii=False, indent=1, default=str)


def _check_declaration(name: str, func: Callable, params: dict) -> None:
    """A declared parameter the function cannot take is a mistake of the
    program, found when the tool is registered, not at its first call."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    for param in params:
        if param not in sig.parameters or sig.parameters[param].kind == inspect.Parameter.POSITIONAL_ONLY:
            raise ConfigError(f"tool {name!r}: parameter {param!r} is declared but {func.__name__}() "
                              f"does not take it (it takes: {', '.join(sig.parameters) or 'nothing'})")
        if param == "_ctx":
            raise ConfigError(f"tool {name!r}: '_ctx' is reserved for the ToolContext; do not declare it")


def _parameters(func: Callable) -> set[str]:
    try:
        return set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return set()
