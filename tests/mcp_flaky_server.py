"""A tiny stdio MCP server that crashes or hangs on request, written for
azclaw's tests with the official SDK's MCPServer (no published server
misbehaves on demand). ``echo`` is read-only; ``crash`` exits the process;
``hang`` blocks the server's event loop, so it answers nothing any more."""

import os
import time

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("flaky")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def echo(text: str) -> str:
    """Say the text back, with this server's process id."""
    return f"echo {text} from pid {os.getpid()}"


@server.tool()
def crash() -> str:
    """Exit the server process at once."""
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Block the server's event loop: not even tools/list is answered."""
    time.sleep(3600)
    return "never"


if __name__ == "__main__":
    server.run()
