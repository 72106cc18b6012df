"""Which MCP servers a run uses, read from ``--mcp`` values and from a topic's
``mcp_servers``, and checked once, with errors that name the field.

Two spellings:

- ``--mcp NAME=COMMAND`` (COMMAND split like a shell would) or
  ``--mcp NAME=http(s)://...`` (Streamable HTTP); ``--mcp FILE.json`` reads
  the ``mcpServers`` (or ``mcp_servers``) of a Claude Desktop / Claude Code
  configuration file;
- the shape those configurations use, in a topic's ``mcp_servers``:
  ``{"NAME": {"command": "...", "args": [...], "env": {...}}}`` or
  ``{"NAME": {"url": "..."}}``, plus azclaw's ``roles`` and ``timeout``.

Standard library only: the core reads these without the MCP SDK.
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..files import MB, read_json

ROLES = ("all", "writers", "none")  # who is offered a tool: every agent, writers only, nobody
CALL_TIMEOUT = 60.0  # seconds one tool call may take before the server counts as hung
START_TIMEOUT = 30.0  # seconds a server may take to start and list its tools
SEP = "__"  # NAME__TOOL
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*(?<!_)")
_FIELDS = ("command", "args", "env", "cwd", "url", "headers", "type", "roles", "timeout")
INSTALL = "pip install 'azclaw[mcp]'"
# azclaw mcp --http: Streamable HTTP keeps a session per client (about 40 KB each). A few clients (Claude
# Code, Cursor) need a few; one that opens thousands must not grow the server without bound.
MAX_SESSIONS = 32  # while this many are open, a new one is refused (HTTP 503) until one ends or expires
SESSION_TIMEOUT = 600.0  # seconds without a request (or an open stream) after which a session is dropped


@dataclass
class McpServerSpec:
    """One MCP server: a command started over stdio, or a Streamable HTTP URL."""

    name: str
    command: list[str] = field(default_factory=list)  # argv: the program, then its arguments
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)  # added to a minimal environment (PATH, HOME, ...)
    cwd: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # sent with every HTTP request
    roles: dict[str, str] = field(default_factory=dict)  # tool (or "*") -> all/writers/none; a str: "*"
    timeout: float = CALL_TIMEOUT
    origin: str = ""  # the topic file that asked for this server; "" for the user's own (--mcp, code)

    def __post_init__(self):
        where = f"mcp server {self.name!r}"
        if isinstance(self.roles, str):  # one role for every tool of the server
            self.roles = {"*": self.roles}
        check_name(self.name, "mcp server name")
        if bool(self.command) == bool(self.url):
            raise ConfigError(f"{where}: give a command or a url (one of them)")
        if self.url:
            check_url(self.url, f"{where}: url")
        for tool, role in self.roles.items():
            if role not in ROLES:
                raise ConfigError(f"{where}: roles[{tool!r}]: expected one of {', '.join(ROLES)}, got {role!r}")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            raise ConfigError(f"{where}: timeout: expected seconds > 0, got {self.timeout!r}")

    @property
    def transport(self) -> str:
        return "http" if self.url else "stdio"

    def describe(self) -> str:
        return self.url or shlex.join(self.command)

    def command_line(self) -> str:
        """What starting this server runs, as a shell would read it: the
        environment it adds, the folder, the command."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (f"env {env} " if env else "") + shlex.join(self.command) + (f"   (in {self.cwd})" if self.cwd else "")

    def role_of(self, tool: str, read_only: bool) -> str:
        """Who may use ``tool``: the user's choice for it or for the server,
        else every agent for a tool marked read-only, writers for the rest."""
        return self.roles.get(tool) or self.roles.get("*") or ("all" if read_only else "writers")


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 32:
        raise ConfigError(f"{what} {name!r}: use letters, digits, '-' and single '_' (at most 32), "
                          f"so that NAME{SEP}TOOL names one tool")
    return name


def check_url(url: str, where: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: expected an http(s)://host... URL, got {url!r}")
    return url


def parse_option(value: str) -> list[McpServerSpec]:
    """One ``--mcp`` value: ``NAME=COMMAND``, ``NAME=http(s)://...`` or a
    JSON configuration file with ``mcpServers``."""
    name, sep, rest = value.partition("=")
    if not sep:
        path = Path(value)
        if path.suffix == ".json" or path.is_file():
            return parse_config_file(path)
        raise ConfigError(f"--mcp {value!r}: expected NAME=COMMAND, NAME=http(s)://... or a .json file")
    check_name(name.strip(), "--mcp: server name")
    rest = rest.strip()
    if rest.startswith(("http://", "https://")):
        return [McpServerSpec(name.strip(), url=check_url(rest, f"--mcp {name.strip()}"))]
    try:
        argv = shlex.split(rest)
    except ValueError as exc:
        raise ConfigError(f"--mcp {name.strip()}: cannot split the command ({exc})") from None
    if not argv:
        raise ConfigError(f"--mcp {name.strip()}: the command is empty (expected NAME=COMMAND)")
    return [McpServerSpec(name.strip(), command=argv)]


def parse_config_file(path: Path) -> list[McpServerSpec]:
    """The servers of a Claude Desktop / Claude Code / Cursor configuration file."""
    data = read_json(path, "mcp configuration file", ConfigError, limit=16 * MB)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object with mcpServers")
    key = next((k for k in ("mcpServers", "mcp_servers") if k in data), None)
    if key is None:
        raise ConfigError(f"{path}: no mcpServers (or mcp_servers) object in it")
    return parse_servers(data[key], f"{path}: {key}")


def parse_servers(data: object, where: str = "mcp_servers", origin: str = "") -> list[McpServerSpec]:
    """``{"NAME": {"command": ..., "args": [...], "env": {...}} | {"url": ...}}``;
    ``origin``: the topic file they come from (their commands then need the user's leave)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object of NAME: {{command, args, env}} or {{url}}")
    specs = [_server(name, entry, f"{where}.{name}") for name, entry in data.items()]
    for spec in specs:
        spec.origin = origin
    return specs


def _server(name: str, entry: object, where: str) -> McpServerSpec:
    check_name(name, f"{where}: server name")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object with command (and args, env) or url")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; valid fields: {', '.join(_FIELDS)}")
    kind = entry.get("type", "http" if "url" in entry else "stdio")
    if kind == "sse":
        raise ConfigError(f"{where}.type: SSE servers are not supported; use the server's Streamable HTTP URL")
    if kind not in ("stdio", "http", "streamable-http"):
        raise ConfigError(f"{where}.type: expected stdio or http, got {json.dumps(kind)}")
    if ("command" in entry) == ("url" in entry):
        raise ConfigError(f"{where}: give command (with args, env) or url, one of them")
    if "url" in entry:
        url = _string(entry["url"], f"{where}.url")
        check_url(url, f"{where}.url")
        command: list[str] = []
    else:
        command = [_string(entry["command"], f"{where}.command")]
        command += _strings(entry.get("args", []), f"{where}.args")
        url = ""
    if not (command and command[0].strip() or url):
        raise ConfigError(f"{where}.command: is empty")
    roles = entry.get("roles", {})
    if isinstance(roles, str):
        roles = {"*": roles}
    if not isinstance(roles, dict):
        raise ConfigError(f"{where}.roles: expected one of {', '.join(ROLES)} or an object TOOL: role")
    for tool, role in roles.items():
        if role not in ROLES:
            raise ConfigError(f"{where}.roles.{tool}: expected one of {', '.join(ROLES)}, got {json.dumps(role)}")
    timeout = entry.get("timeout", CALL_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"{where}.timeout: expected seconds > 0, got {json.dumps(timeout)}")
    cwd = entry.get("cwd")
    if cwd is not None:
        _string(cwd, f"{where}.cwd")
    return McpServerSpec(name, command=command, url=url, env=_mapping(entry.get("env", {}), f"{where}.env"),
                         cwd=cwd, headers=_mapping(entry.get("headers", {}), f"{where}.headers"),
                         roles=dict(roles), timeout=float(timeout))


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {json.dumps(value)[:60]}")
    return value


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of strings, got {json.dumps(value)[:60]}")
    return [_string(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _mapping(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an object of names to strings, got {json.dumps(value)[:60]}")
    return {k: _string(v, f"{where}.{k}") for k, v in value.items()}


def check_unique(specs: list[McpServerSpec]) -> list[McpServerSpec]:
    """The servers of a run, each name once."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"mcp server {spec.name!r} is given twice")
        seen.add(spec.name)
    return specs


def require_sdk() -> None:
    """Raise a one-line ConfigError naming the install command when the MCP SDK is missing."""
    try:
        import mcp  # noqa: F401
        from mcp import Client  # noqa: F401  (2.x: the 1.x SDK has no Client)
    except ImportError:
        raise ConfigError(f"MCP needs the MCP SDK 2.x: {INSTALL}") from None
