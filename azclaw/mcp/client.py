"""MCP servers' tools in a ToolRegistry, offered as ``NAME__TOOL``.

The MCP SDK is asynchronous and azclaw's tools are plain calls, so each
server lives on a private event loop in a background thread: starting it,
listing its tools and every tool call are sent to that loop and waited for
(a call up to the server's ``timeout``). What can go wrong with a server
becomes an ``ERROR:`` result for the one call it hit, never an exception in
the run: a server that crashes, or that after a call timed out does not even
list its tools, is restarted once; after a second failure its tools answer that
it is down. ``close()`` (the registry's) stops the server and its thread.
"""

from __future__ import annotations

from .config import require_sdk

require_sdk()

import asyncio  # noqa: E402  (after the SDK check: one line instead of an ImportError)
import atexit  # noqa: E402
import concurrent.futures  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import weakref  # noqa: E402
from contextlib import AsyncExitStack  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import mcp_types  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

from ..errors import ConfigError, McpServerError, ToolError  # noqa: E402
from ..tools.registry import Tool, ToolRegistry  # noqa: E402
from .config import SEP, START_TIMEOUT, McpServerSpec  # noqa: E402
from ..options import RunFolder  # noqa: E402

log = logging.getLogger("azclaw")

PING_TIMEOUT = 5.0  # after a call timed out: a server that does not list its tools either is hung
STOP_TIMEOUT = 15.0  # the SDK closes stdin, waits 2 s, then SIGTERM, 2 s, SIGKILL
MAX_NAME = 64  # OpenAI-compatible servers refuse longer function names
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_open: "weakref.WeakSet[McpConnection]" = weakref.WeakSet()


class McpConnection:
    """One MCP server for the length of a run; ``call`` is synchronous."""

    def __init__(self, spec: McpServerSpec, log_dir: str | Path | None = None,
                 start_timeout: float = START_TIMEOUT):
        self.spec = spec
        self.start_timeout = start_timeout
        self.tools: list[mcp_types.Tool] = []
        self.restarts = 0
        self.down = ""  # why the server was given up on
        self._lock = threading.Lock()
        self._generation = 0
        self._client: Client | None = None
        self._stop: asyncio.Event | None = None
        self._runner: concurrent.futures.Future | None = None
        self._closed = False
        self._log_path = RunFolder(logs=Path(log_dir)).mcp_log(spec.name) if log_dir else None
        self._errlog = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"azclaw-mcp-{spec.name}")
        self._thread.start()
        _open.add(self)

    # -- start and stop -----------------------------------------------------
    def start(self) -> list[mcp_types.Tool]:
        """Start the server and list its tools; McpServerError names the
        server and what it said when it cannot start."""
        try:
            self._connect()
        except McpServerError:
            self.close()
            raise
        return self.tools

    def _connect(self) -> None:
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._runner = asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        try:
            self.tools = ready.result(self.start_timeout)
        except concurrent.futures.TimeoutError:
            self._stop_runner()
            raise McpServerError(f"{self._what()}: no answer within {self.start_timeout:g} s of starting"
                                 f"{self._stderr_tail()}") from None
        except Exception as exc:
            self._stop_runner()
            raise McpServerError(f"{self._what()}: could not start: {_reason(exc)}{self._stderr_tail()}") from None
        self._generation += 1

    async def _serve(self, ready: concurrent.futures.Future) -> None:
        """Hold the connection open until told to stop (one task enters and leaves it)."""
        client = None
        try:
            async with AsyncExitStack() as stack:
                client = await stack.enter_async_context(Client(await self._transport(stack)))
                tools, cursor = [], None
                for _page in range(100):
                    listed = await client.list_tools(cursor=cursor)
                    tools += listed.tools
                    cursor = listed.next_cursor
                    if not cursor:
                        break
                self._stop = asyncio.Event()
                self._client = client
                ready.set_result(tools)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else McpServerError("start cancelled"))
            if not isinstance(exc, Exception):
                raise
        finally:
            if client is not None and self._client is client:
                self._client = None

    async def _transport(self, stack: AsyncExitStack):
        spec = self.spec
        if spec.url:
            if not spec.headers:
                return streamable_http_client(spec.url)
            from mcp.shared._httpx_utils import create_mcp_http_client
            http = await stack.enter_async_context(create_mcp_http_client(headers=spec.headers))
            return streamable_http_client(spec.url, http_client=http)
        if self._errlog is None:
            if self._log_path:
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
                self._errlog = open(self._log_path, "a", encoding="utf-8")
            else:
                self._errlog = tempfile.TemporaryFile("w+", encoding="utf-8")
        params = StdioServerParameters(command=spec.command[0], args=spec.command[1:], env=spec.env or None,
                                       cwd=spec.cwd)
        return stdio_client(params, errlog=self._errlog)

    def _stop_runner(self) -> None:
        runner, stop = self._runner, self._stop
        self._runner = self._stop = None
        if runner is None:
            return
        if stop is not None and not runner.done():
            self._loop.call_soon_threadsafe(stop.set)
        elif not runner.done():
            runner.cancel()  # still starting
        try:
            runner.result(STOP_TIMEOUT)
        except BaseException:  # it is stopping; how it ended was reported already
            pass

    def close(self) -> None:
        """Stop the server and the thread; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_runner()
            try:  # what a cancelled call left on the loop ends before the loop does
                asyncio.run_coroutine_threadsafe(_cancel_the_rest(), self._loop).result(STOP_TIMEOUT)
            except BaseException:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(STOP_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()
            if self._errlog is not None:
                self._errlog.close()
            _open.discard(self)

    # -- calls --------------------------------------------------------------
    def call(self, tool: str, arguments: dict) -> str:
        """Call ``tool``; its text, or ToolError with what went wrong."""
        with self._lock:
            if self._closed:
                raise ToolError(f"MCP server {self.spec.name!r} is stopped")
            if self.down:
                raise ToolError(f"MCP server {self.spec.name!r} is down ({self.down}); "
                                f"its tools are unavailable for the rest of the run")
            client, generation = self._client, self._generation
        if client is None:
            return self._failed(generation, tool, "its connection is closed")
        timeout = self.spec.timeout
        try:
            result = self._run(client.call_tool(tool, arguments, read_timeout_seconds=timeout), timeout + 5)
        except (concurrent.futures.TimeoutError, MCPError) as exc:
            code = getattr(exc, "code", mcp_types.REQUEST_TIMEOUT)
            if code == mcp_types.REQUEST_TIMEOUT:
                if self._still_answers(client):
                    raise ToolError(f"{self._qualified(tool)}: no answer within {timeout:g} s "
                                    f"(the server still answers; a longer 'timeout' may help)") from None
                return self._failed(generation, tool, f"no answer within {timeout:g} s, not even to a tools/list")
            if code == mcp_types.CONNECTION_CLOSED:
                return self._failed(generation, tool, "the connection closed (the server exited or crashed)")
            raise ToolError(f"{self._qualified(tool)}: the server refused the call: {exc.message}") from None
        except Exception as exc:  # a broken transport, an HTTP server gone, a malformed reply
            if self._client is client and isinstance(exc, ValueError):
                raise ToolError(f"{self._qualified(tool)}: unusable reply: {_reason(exc)}") from None
            return self._failed(generation, tool, _reason(exc))
        text = render(result)
        if result.is_error:
            raise ToolError(f"{self._qualified(tool)}: {text}")
        return text

    def _run(self, coro, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def _still_answers(self, client: Client) -> bool:
        async def ping():  # tools/list, not ping: the 2026-07-28 protocol has no ping
            with anyio.fail_after(PING_TIMEOUT):
                await client.list_tools(cache_mode="refresh")
        try:
            self._run(ping(), PING_TIMEOUT + 2)
            return True
        except Exception:
            return False

    def _failed(self, generation: int, tool: str, why: str) -> str:
        """The server crashed or hung during a call: restart it once; the
        call is not repeated (it may have done part of its work)."""
        tail = self._stderr_tail()
        with self._lock:
            if self._closed:
                raise ToolError(f"MCP server {self.spec.name!r} is stopped")
            if generation == self._generation and not self.down:  # the first to see it decides
                if self.restarts >= 1:
                    self.down = f"failed again after a restart: {why}"
                    self._stop_runner()
                else:
                    self.restarts += 1
                    self._stop_runner()
                    try:
                        self._connect()
                        log.warning("MCP server %r restarted after: %s", self.spec.name, why)
                    except McpServerError as exc:
                        self.down = f"could not be restarted: {exc}"
            after = (f"it is down: {self.down}" if self.down
                     else "it was restarted; the call was not repeated, call again if it is still needed")
        log.warning("MCP server %r: %s during %s%s", self.spec.name, why, tool, tail)
        raise ToolError(f"{self._qualified(tool)}: {why}{tail}; {after}")

    # -- text ---------------------------------------------------------------
    def _what(self) -> str:
        return f"MCP server {self.spec.name!r} ({self.spec.describe()})"

    def _qualified(self, tool: str) -> str:
        return f"{self.spec.name}{SEP}{tool}"

    def _stderr_tail(self, limit: int = 300) -> str:
        """The last lines the server wrote on stderr, for an error message."""
        if self._errlog is None or self._errlog.closed:
            return ""
        try:
            self._errlog.flush()
            fd = self._errlog.fileno()
            size = os.fstat(fd).st_size
            data = os.pread(fd, 4096, max(0, size - 4096)).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        lines = [ln.strip() for ln in data.splitlines() if ln.strip()]
        if not lines:
            return ""
        tail = " | ".join(lines[-3:])
        return f" (stderr: {tail[-limit:]})"


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


def render(result: mcp_types.CallToolResult) -> str:
    """A tool result as text: text content as is; images, audio and other
    content described, never dropped without a word."""
    parts = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} content: {block.mime_type}, {len(block.data) * 3 // 4} bytes; not shown]")
        elif kind == "resource_link":
            about = f" ({block.mime_type})" if block.mime_type else ""
            parts.append(f"[resource link {block.name}: {block.uri}{about}"
                         + (f": {block.description}]" if block.description else "]"))
        elif kind == "resource":
            res = block.resource
            if getattr(res, "text", None) is not None:
                parts.append(f"[resource {res.uri}]\n{res.text}")
            else:
                size = len(getattr(res, "blob", "") or "") * 3 // 4
                parts.append(f"[resource {res.uri}: {res.mime_type or 'binary data'}, {size} bytes; not shown]")
        else:
            parts.append(f"[{kind or 'unknown'} content; not shown]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts) if parts else "(no content)"


def tool_name(server: str, tool: str) -> str:
    """``NAME__TOOL``, with characters that function names may not hold made ``_``."""
    return (server + SEP + _UNSAFE.sub("_", tool))[:MAX_NAME]


def is_read_only(tool: mcp_types.Tool) -> bool:
    return bool(tool.annotations and tool.annotations.read_only_hint)


def register(registry: ToolRegistry, spec: McpServerSpec, log_dir: str | Path | None = None,
             start_timeout: float = START_TIMEOUT) -> list[str]:
    """Start ``spec``'s server and add its tools to ``registry`` as
    ``NAME__TOOL``, each for the role ``spec.role_of`` gives it (a tool for
    nobody is not added); ``registry.close()`` stops the server."""
    connection = McpConnection(spec, log_dir, start_timeout)
    connection.start()
    registry.on_close(connection.close)
    added = []
    for tool in connection.tools:
        role = spec.role_of(tool.name, is_read_only(tool))
        name = tool_name(spec.name, tool.name)
        if role == "none":
            continue
        if registry.get(name) is not None:
            log.warning("MCP server %r: tool %r left out: %s is taken", spec.name, tool.name, name)
            continue
        description = tool.description or tool.title or f"{tool.name} (MCP server {spec.name})"
        try:
            registry.add(Tool.from_schema(name, description, tool.input_schema or {}, _caller(connection, tool.name),
                                          writer_only=role == "writers", approve=not is_read_only(tool)))
        except ConfigError as exc:
            log.warning("MCP server %r: tool %r left out: %s", spec.name, tool.name, exc)
            continue
        added.append(name)
    return added


def add_server(registry: ToolRegistry, name: str, command: str | list[str] | None = None,
               url: str | None = None, **options) -> list[str]:
    """``azclaw.mcp.add_server``: ``command`` is an argv list or a
    string split like a shell would."""
    argv = shlex.split(command) if isinstance(command, str) else list(command or [])
    log_dir = options.pop("log_dir", None)
    return register(registry, McpServerSpec(name, command=argv, url=url or "", **options), log_dir)


def register_all(registry: ToolRegistry, specs: list[McpServerSpec], log_dir: str | Path | None = None) -> list[str]:
    """Start every server of a run, in order; the first that cannot start
    raises McpServerError (those already started stop with the registry)."""
    return [name for spec in specs for name in register(registry, spec, log_dir)]


def _caller(connection: McpConnection, tool: str):
    def call(**arguments):
        return connection.call(tool, arguments)
    call.__name__ = tool_name(connection.spec.name, tool)
    return call


def _reason(exc: BaseException) -> str:
    """An exception as a short line; the SDK wraps the real cause in groups."""
    while getattr(exc, "exceptions", None):  # an ExceptionGroup (3.11+ or the backport)
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return exc.message
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename or 'the command'}: command not found"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@atexit.register
def _close_all() -> None:
    """A library user who forgot ``registry.close()`` still leaves no server behind."""
    for connection in list(_open):
        connection.close()
