"""A topic's MCP commands run only when the user says so.

Topic files travel between people, and a topic's ``mcp_servers`` may name a
command: starting that server runs the command on this machine, as the user,
outside the ``run_python`` sandbox. A command given on the command line
(``--mcp``) is the user's own and runs as asked. A command from a topic runs
only with ``--allow-topic-commands``, or when the user, shown the commands,
answers yes on a terminal; without either, nothing runs and the error names
the topic file and the command. A topic's HTTP servers (a URL) run nothing
here; they are listed all the same.

Standard library only, like ``config``.
"""

from __future__ import annotations

import sys
from typing import TextIO

from ..errors import ConfigError
from ..safetext import one_line
from .config import McpServerSpec

FLAG = "--allow-topic-commands"


class TopicCommands:
    """The servers that topic files (not the user) asked for."""

    def __init__(self, specs: list[McpServerSpec]):
        self.commands = [s for s in specs if s.origin and s.command]  # would run on this machine
        self.urls = [s for s in specs if s.origin and s.url]

    def lines(self) -> list[str]:
        """One line per server a topic asked for, safe to print."""
        return ([one_line(f"{s.origin}: mcp_servers.{s.name} runs: {s.command_line()}") for s in self.commands]
                + [one_line(f"{s.origin}: mcp_servers.{s.name} connects to {s.url} (runs nothing here)")
                   for s in self.urls])

    def allow(self, allowed: bool, stdin: TextIO | None = None, out: TextIO | None = None,
              quiet: bool = False) -> None:
        """Return when the topic's commands may run (``allowed``: the user
        gave ``--allow-topic-commands``; else a yes on the terminal); raise a
        one-line ConfigError that names the topic file and the command when
        they may not. Nothing has run either way."""
        stdin = stdin or sys.stdin
        out = out or sys.stderr
        if not self.commands or allowed:
            if not quiet and (self.commands or self.urls):
                self._say(out, "azclaw: MCP servers from the topic" + (f" (allowed by {FLAG})" if allowed else "")
                          + ":")
            return
        if not _is_terminal(stdin):
            first = self.commands[0]
            more = len(self.commands) - 1
            raise ConfigError(one_line(
                f"{first.origin}: mcp_servers.{first.name} would run `{first.command_line()}` on this machine"
                + (f" (and {more} more command{'s' if more > 1 else ''})" if more else "")
                + f"; nothing ran. Read the topic's commands (azclaw doctor lists them), then allow them with {FLAG}"))
        self._say(out, "azclaw: the topic asks to start MCP servers; these commands would run on this machine, "
                       "as you, outside the run_python sandbox:")
        out.write(f"Run them? [y/N] (or give {FLAG}) ")
        out.flush()
        answer = stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            origin = self.commands[0].origin
            raise ConfigError(f"{one_line(origin)}: its MCP server commands were not allowed, so nothing ran "
                              f"(allow them with {FLAG})")

    def _say(self, out: TextIO, head: str) -> None:
        out.write(head + "\n" + "".join(f"  {line}\n" for line in self.lines()))
        out.flush()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
