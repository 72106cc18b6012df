"""``azclaw mcp``: the team memory of a run folder as an MCP server.

A person in Claude Code, Claude Desktop or Cursor can ask what the team
decided while the run goes on, and leave a note that the agents' ``recall``
finds. Tools: ``recall(query, agent?)``, ``list_memories(agent?, limit?)``,
``remember(text, title, agent)`` (left out with ``read_only``) and
``status()``; the status is also the resource ``azclaw://status``.

The memory files are the only truth and the run may write them meanwhile:
``TeamMemory`` follows files added by anyone, and ``remember`` takes the same
lock the agents take.
"""

from __future__ import annotations

from .config import require_sdk

require_sdk()

import socket  # noqa: E402  (after the SDK check: one line instead of an ImportError)
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402
from mcp.types import ToolAnnotations  # noqa: E402

from ..errors import AzclawError, ConfigError  # noqa: E402
from ..memory import TeamMemory  # noqa: E402
from ..memory.layout import agent_folders  # noqa: E402
from ..options import RunFolder  # noqa: E402
from ..runlog.status import format_status, read_status  # noqa: E402
from .config import MAX_SESSIONS, SESSION_TIMEOUT  # noqa: E402

LIST_LIMIT = 25
MAX_LIST = 500
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                         open_world_hint=False)


def _check_port(port: int) -> None:
    """A port that is out of range or taken is one error line, not a server's traceback."""
    if not 0 < port < 65536:
        raise ConfigError(f"--http {port}: expected a port number from 1 to 65535")
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(f"--http {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror})") from None


def build_server(run_dir: str | Path = ".", agents_dir: str | Path | None = None,
                 log_dir: str | Path | None = None, read_only: bool = False) -> tuple[MCPServer, TeamMemory]:
    """The MCP server over the run in ``run_dir`` (its ``agents/`` and
    ``logs/`` unless given); the caller closes the TeamMemory."""
    run_dir = Path(run_dir)
    folder = RunFolder.under(run_dir)
    agents_dir = Path(agents_dir) if agents_dir else folder.agents
    log_dir = Path(log_dir) if log_dir else folder.logs
    agents = agent_folders(agents_dir)
    if not agents:
        raise ConfigError(f"{agents_dir}: no agents here (expected <name>/config.json folders); "
                          f"give the run's folder with --dir, or its --agents-dir")
    memory = TeamMemory({name: agents_dir / name for name in agents})
    lock = threading.Lock()  # tools run in worker threads; one index connection
    team = ", ".join(agents)
    server = MCPServer("azclaw", instructions=(
        f"The team memory of an azclaw run ({team}): the decisions, designs and open problems its agents "
        "stored. recall searches it; list_memories shows the newest; status tells how the run is going."
        + ("" if read_only else " remember leaves a note that the agents' recall finds.")), log_level="WARNING")

    def use(action):
        with lock:
            try:
                return action()
            except AzclawError as exc:
                raise ToolError(str(exc)) from None

    @server.tool(annotations=READ_ONLY, description=(
        "Search the team's memory: the best matches for the query's words, each with its author and day. "
        f"An empty query lists the newest memories with counts per agent. agent: only the memories of one "
        f"agent ({team})."))
    def recall(query: str, agent: str | None = None) -> str:
        return use(lambda: memory.recall(query, agent or None, limit=10))

    @server.tool(annotations=READ_ONLY, description=(
        f"List the team's memories, newest first: day, title, author and first line. agent: only one agent's "
        f"({team}); limit: how many (default {LIST_LIMIT})."))
    def list_memories(agent: str | None = None, limit: int = LIST_LIMIT) -> str:
        def listing() -> str:
            found = memory.memories(agent or None)
            shown = found[:max(1, min(limit, MAX_LIST))]
            if not shown:
                return "No memories stored yet." if not agent else f"{agent} has no memories yet."
            lines = [f"{len(found)} memories; the newest {len(shown)}:"]
            for m in shown:
                first = next((ln.strip() for ln in m.text().splitlines() if ln.strip()), "")
                lines.append(f"- [{m.day}] {m.title} (by {m.agent}): {first[:120]}")
            return "\n".join(lines)
        return use(listing)

    if not read_only:
        @server.tool(annotations=WRITES, description=(
            f"Leave a note in the team's memory, stored as AGENT's memory ({team}) under TITLE, where every "
            "agent's recall finds it (the same title on the same day adds to that memory)."))
        def remember(text: str, title: str, agent: str) -> str:
            if not text.strip():
                raise ToolError("text is empty: nothing to remember")
            stored = use(lambda: memory.remember(agent, text, title))
            return f"Stored in {stored.agent}'s memory as {stored.title!r} ({stored.day}): {stored.path.absolute()}"

    @server.tool(name="status", annotations=READ_ONLY, description=(
        "How the run is going: running or finished, round and phase, each agent's turns, tokens, "
        "memories and errors, and the coherence probes."))
    def run_status() -> str:
        return use(lambda: format_status(read_status(log_dir)))

    @server.resource("azclaw://status", name="status", mime_type="text/plain",
                     description="The run's status, as `azclaw status` prints it")
    def status_resource() -> str:
        try:
            return format_status(read_status(log_dir))
        except AzclawError as exc:
            return f"No status yet: {exc}"
    return server, memory


def serve(run_dir: str | Path = ".", agents_dir: str | Path | None = None, log_dir: str | Path | None = None,
          read_only: bool = False, http_port: int | None = None, announce=None, max_sessions: int = MAX_SESSIONS,
          session_timeout: float = SESSION_TIMEOUT) -> None:
    """Serve over stdio, or Streamable HTTP on 127.0.0.1:``http_port`` (at
    ``/mcp``; at most ``max_sessions`` sessions, each dropped after
    ``session_timeout`` idle seconds), until stopped; ``announce(url)`` is
    called before HTTP serving starts."""
    if http_port is not None:
        _check_port(http_port)
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ConfigError(f"--max-sessions {max_sessions}: expected a number of sessions >= 1")
        if not session_timeout > 0 or session_timeout == float("inf"):
            raise ConfigError(f"--session-timeout {session_timeout}: expected seconds > 0")
    server, memory = build_server(run_dir, agents_dir, log_dir, read_only)
    if http_port is not None and announce:
        announce(f"http://127.0.0.1:{http_port}/mcp")
    try:
        if http_port is None:
            server.run("stdio")
        else:
            server.run("streamable-http", host="127.0.0.1", port=http_port, max_sessions=max_sessions,
                       session_idle_timeout=float(session_timeout))
    except KeyboardInterrupt:
        pass
    finally:
        memory.close()
