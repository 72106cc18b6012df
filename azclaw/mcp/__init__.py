"""MCP (Model Context Protocol): tools from MCP servers in, the team's memory out.

- ``client``: MCP servers' tools in a ToolRegistry, as ``NAME__TOOL``
  (``add_server(registry, ...)``, ``azclaw run --mcp``).
- ``server``: ``azclaw mcp``, the team memory of a run folder as an MCP server.
- ``config``: the server specs (``--mcp`` values, a topic's ``mcp_servers``).
- ``consent``: a topic's commands run only when the user allows them.
- ``doctor``: ``azclaw doctor --mcp`` checks.

Only ``config`` and ``consent`` are imported here: they need no MCP SDK. The others need
``pip install 'azclaw[mcp]'`` and say so in one line when it is missing.
"""

from __future__ import annotations

from .config import McpServerSpec, check_unique, parse_config_file, parse_option, parse_servers, require_sdk
from .consent import TopicCommands

__all__ = ["McpServerSpec", "TopicCommands", "add_server", "parse_config_file", "parse_option", "parse_servers",
           "require_sdk", "servers_of", "start_servers", "topic_servers"]


def servers_of(options: list[str] | None, topic=None) -> list[McpServerSpec]:
    """The MCP servers of a run: ``--mcp`` values, then the topic's ``mcp_servers``
    (marked with the topic file as their ``origin``)."""
    specs = [spec for value in options or [] for spec in parse_option(value)]
    return check_unique(specs + topic_servers(topic))


def topic_servers(topic) -> list[McpServerSpec]:
    """A topic's ``mcp_servers`` (as written in the file) as checked server
    specs; every problem names the topic file and the field."""
    raw = getattr(topic, "mcp_servers", None)
    if not raw:
        return []
    source = getattr(topic, "source", "") or "topic"
    return parse_servers(raw, f"{source}: mcp_servers", origin=source)


def start_servers(registry, specs: list[McpServerSpec], log_dir=None) -> list[str]:
    """Start ``specs`` and add their tools to ``registry`` (their stderr goes to
    ``<log_dir>/mcp_NAME.log``); on any failure the registry is closed and the
    McpServerError names the server. Returns the tool names added."""
    if not specs:
        return []
    require_sdk()
    from .client import register_all
    try:
        return register_all(registry, specs, log_dir)
    except BaseException:
        registry.close()
        raise


def add_server(registry, name: str, command: str | list[str] | None = None, url: str | None = None,
               **options) -> list[str]:
    """Start the MCP server ``name`` (``command`` over stdio, or ``url`` over
    Streamable HTTP) and add its tools to ``registry`` as ``NAME__TOOL``;
    returns their names. ``registry.close()`` stops it. ``options``: env,
    cwd, roles, timeout, log_dir (see ``McpServerSpec``)."""
    require_sdk()
    from .client import add_server as add
    return add(registry, name, command=command, url=url, **options)
