"""``azclaw doctor --mcp``: start each MCP server, list its tools with the
roles they get, and report the servers that cannot start. A topic's
commands are listed, and started only with ``--allow-topic-commands``."""

from __future__ import annotations

import time

from ..doctor import FAIL, OK, WARN, Check
from ..errors import ConfigError, McpServerError
from ..safetext import one_line
from .config import require_sdk
from .config import INSTALL, START_TIMEOUT, McpServerSpec
from .consent import FLAG

WHO = {"all": "every agent", "writers": "writers only", "none": "nobody (not offered)"}


def check_mcp(specs: list[McpServerSpec], start_timeout: float = START_TIMEOUT,
              allow_topic_commands: bool = False) -> list[Check]:
    """One check per server (started, or why not) and one per tool (who gets it, and why).
    A topic's command is only listed unless ``allow_topic_commands``."""
    if not specs:
        return []
    listed = [] if allow_topic_commands else [s for s in specs if s.origin and s.command]
    checks = [Check(WARN, f"mcp {s.name}", one_line(f"{s.origin} asks to run `{s.command_line()}` on this "
                                                    "machine; not started, so not checked"),
                    f"read the command; if you trust it, add {FLAG} (azclaw run asks on a terminal)")
              for s in listed]
    specs = [s for s in specs if s not in listed]
    if not specs:
        return checks
    try:
        require_sdk()
    except ConfigError as exc:
        return checks + [Check(FAIL, "mcp", str(exc).split(": ")[0], INSTALL)]
    from .client import McpConnection, is_read_only, tool_name

    for spec in specs:
        started = time.monotonic()
        connection = McpConnection(spec, start_timeout=start_timeout)
        try:
            tools = connection.start()
        except McpServerError as exc:
            checks.append(Check(FAIL, f"mcp {spec.name}", str(exc),
                                "run the command by hand to see its errors; check the command, args, env or url"))
            continue
        finally:
            connection.close()
        seconds = time.monotonic() - started
        if not tools:
            checks.append(Check(WARN, f"mcp {spec.name}", f"{spec.describe()} started in {seconds:.1f} s "
                                                          "but offers no tools", "check the server's options"))
            continue
        checks.append(Check(OK, f"mcp {spec.name}", (f"from {spec.origin}: " if spec.origin else "")
                            + f"{spec.describe()} started in {seconds:.1f} s, {len(tools)} tools"))
        for tool in tools:
            read_only = is_read_only(tool)
            role = spec.role_of(tool.name, read_only)
            why = ("set in roles" if tool.name in spec.roles or "*" in spec.roles
                   else "marked readOnlyHint" if read_only else "not marked readOnlyHint")
            checks.append(Check(OK, f"mcp tool {tool_name(spec.name, tool.name)}", f"{WHO[role]} ({why})"))
    return checks
