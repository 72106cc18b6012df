"""The six built-in tools every team starts with.

Everyone: recall, remember, read_file, list_files.
Writers only: write_file, run_python.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from . import safeopen, sandbox
from .approval import write_preview
from ..errors import ToolError
from .registry import ToolContext, ToolRegistry

LIST_LIMIT = 200
MAX_PREVIEW_READ = 200_000


MEMORY_CHARS = 20_000  # one remember call; a memory is a decision, not a document


def _readable_roots(ctx: ToolContext) -> list[Path]:
    return [*ctx.source_dirs, ctx.output_dir]


def _root_of(path: Path, ctx: ToolContext) -> Path | None:
    """The readable folder (resolved) that holds ``path``, if any."""
    for root in _readable_roots(ctx):
        root = root.resolve()
        if path == root or root in path.parents:
            return root
    return None


def _display(path: Path, ctx: ToolContext) -> str:
    root = _root_of(path, ctx)
    return (str(path.relative_to(root)) or ".") if root else path.name


def _reachable(link: Path, ctx: ToolContext) -> bool:
    """True when read_file would read what ``link`` points to."""
    real = link.resolve()
    root = _root_of(real, ctx)
    return root is not None and not sandbox.is_secret(real.relative_to(root))


def _open_for_reading(path: str, ctx: ToolContext):
    """A text file of the sources or the output, opened without following a
    link (a swap while opening fails); regular files only (a FIFO or a device
    would block the run), and in the output folder only with one hard link
    (code could link a file it may not read)."""
    root, rel = sandbox.locate(path, _readable_roots(ctx))
    try:
        fd = safeopen.open_beneath(root, rel, os.O_RDONLY | os.O_NONBLOCK)
    except safeopen.Swapped as exc:
        raise ToolError(f"{path!r}: refused, {exc.strerror}") from None
    except OSError as exc:
        raise ToolError(f"{path!r}: cannot open ({exc.strerror})") from None
    info = os.fstat(fd)
    problem = ""
    if stat.S_ISDIR(info.st_mode):
        problem = f"{path!r} is a folder; use list_files"
    elif not stat.S_ISREG(info.st_mode):
        problem = f"{path!r} is not a regular file"
    elif info.st_nlink > 1 and _in_output(root / rel, ctx):
        problem = (f"{path!r} has {info.st_nlink} hard links; files in the output folder with more than one "
                   "are refused (a link can lead to a file outside)")
    if problem:
        os.close(fd)
        raise ToolError(problem)
    return os.fdopen(fd, encoding="utf-8", errors="replace")


def _in_output(path: Path, ctx: ToolContext) -> bool:
    out = ctx.output_dir.resolve()
    return path == out or out in path.parents


def _has_memories(ctx: ToolContext) -> bool:
    findable = getattr(ctx.memory, "findable", None)  # a memory, or a past round's message
    return findable() if findable is not None else any(ctx.memory.counts().values())


def _has_files(ctx: ToolContext) -> bool:
    """A file or folder (not hidden) at the top of a readable folder."""
    for root in _readable_roots(ctx):
        try:
            with os.scandir(root) as entries:
                if any(not e.name.startswith(".") for e in entries):
                    return True
        except OSError:
            continue
    return False


def _found_nothing(recalled: str) -> bool:
    return recalled.startswith("No memories") or recalled.endswith("has no memories yet.")


def _existing_text(root: Path, rel: Path, limit: int = MAX_PREVIEW_READ) -> str | None:
    """The file a write would replace, its first ``limit`` bytes (None: new)."""
    try:
        fd = safeopen.open_beneath(root, rel, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        return fh.read(limit).decode("utf-8", "replace")


def _write_preview(args: dict, ctx: ToolContext) -> str:
    """What the approver reads before a write: a diff against the file it replaces."""
    try:
        root, rel = sandbox.locate(args["path"], [ctx.output_dir], must_exist=False)
    except ToolError as exc:
        return f"{args.get('path')!r}: {exc}"
    return write_preview(str(rel), _existing_text(root, rel), args["content"])


def build_default_registry() -> ToolRegistry:
    """A registry with recall, remember, read_file, list_files, write_file
    and run_python. Add your own tools to it with ``@registry.tool``."""
    registry = ToolRegistry()

    @registry.tool("recall", "Search the team's persistent memory. An empty query lists the "
                   "newest memories and counts; words find the best matching memories of every "
                   "agent, the newest of a subject first, then matching messages of past rounds. "
                   "Set agent to a teammate's name, or to \"me\", to search only those memories.",
                   {"query": "string", "agent": "string"}, approve=False, team_params=("agent",),
                   ready=_has_memories)
    def recall(query: str = "", agent: str = "", _ctx: ToolContext = None) -> str:
        names = list(_ctx.memory.roots)
        if agent.strip().lower() in ("me", "self", "myself"):
            agent = _ctx.agent
        if agent and agent not in names:
            raise ToolError(f"unknown agent {agent!r}; agent is one of {', '.join(names)} or \"me\", "
                            "or leave it out to search everyone's memories")
        found = _ctx.memory.recall(query, agent or None)
        _ctx.note("recall", query, "nothing" if _found_nothing(found) else "found")
        return found

    @registry.tool("remember", "Store a decision or fact in persistent memory so that you and your "
                   "team can recall it in later rounds. Use a short descriptive title; the same "
                   "title adds a newer, dated entry to that memory.", {"text": "string", "title": "string"},
                   approve=False)
    def remember(text: str, title: str = "", _ctx: ToolContext = None) -> str:
        if not text.strip():
            raise ToolError("text is empty; nothing to remember")
        if len(text) > MEMORY_CHARS:
            raise ToolError(f"text is {len(text):,} characters; a memory holds at most {MEMORY_CHARS:,}: "
                            "store the decision, not the document (write documents with write_file)")
        memory = _ctx.memory.remember(_ctx.agent, text, title, round=_ctx.round or None)
        _ctx.note("memory", memory.title, "new" if memory.stored else "repeat")
        when = f"round {memory.round}, {memory.day}" if memory.round else memory.day
        if not memory.stored:  # said plainly: a model storing the same thing every turn is going in circles
            return f"Already remembered as {memory.title!r} ({when}): this text is stored there; nothing new."
        if memory.entries > 1:
            return (f"Remembered as {memory.title!r} ({when}): the newest of its {memory.entries} entries; "
                    "recall shows it first.")
        return f"Remembered as {memory.title!r} ({when})."

    @registry.tool("read_file", "Read a text file from the source folders or the output folder.",
                   {"path": "string", "max_lines": "integer"}, approve=False, ready=_has_files)
    def read_file(path: str, max_lines: int = 200, _ctx: ToolContext = None) -> str:
        max_lines = max(1, min(int(max_lines), 2000))
        lines: list[str] = []
        total = 0
        with _open_for_reading(path, _ctx) as fh:
            for total, line in enumerate(fh, 1):
                if total <= max_lines:
                    lines.append(line.rstrip("\n"))
        text = "\n".join(lines)
        if total > max_lines:
            text += f"\n[... showing {max_lines} of {total} lines; raise max_lines to see more]"
        return text or "[empty file]"

    @registry.tool("list_files", "List the files in a folder of the sources or the output. "
                   "An empty directory lists the top of every folder you may read.",
                   {"directory": "string"}, approve=False, ready=_has_files)
    def list_files(directory: str = "", _ctx: ToolContext = None) -> str:
        if directory.strip() in ("", "."):
            folders = [r.resolve() for r in _readable_roots(_ctx) if r.is_dir()]
        else:
            folders = [sandbox.resolve_inside(directory, _readable_roots(_ctx))]
        lines: list[str] = []
        for folder in folders:
            if not folder.is_dir():
                raise ToolError(f"{directory!r} is a file; use read_file")
            for entry in sorted(folder.rglob("*")):
                rel = entry.relative_to(folder)
                if sandbox.is_secret(rel) or any(p.startswith(".") for p in rel.parts):
                    continue
                if entry.is_symlink() and not _reachable(entry, _ctx):
                    continue
                if entry.is_file():
                    lines.append(f"{_display(entry, _ctx)} ({entry.stat().st_size} bytes)")
                if len(lines) >= LIST_LIMIT:
                    lines.append("[... more files; list a sub-folder to see them]")
                    return "\n".join(lines)
        return "\n".join(lines) or "[no files]"

    @registry.tool("write_file", "Write a text file into the output folder (creates folders; "
                   "replaces an existing file).", {"path": "string", "content": "string"},
                   writer_only=True, preview=_write_preview)
    def write_file(path: str, content: str, _ctx: ToolContext = None) -> str:
        size = len(content.encode("utf-8"))
        if size > sandbox.MAX_WRITE_BYTES:
            raise ToolError(f"content is {size} bytes; the limit is {sandbox.MAX_WRITE_BYTES}")
        root, rel = sandbox.locate(path, [_ctx.output_dir], must_exist=False)
        if not rel.parts or (root / rel).is_dir():
            raise ToolError(f"{path!r} is a folder; give a file path")
        before = _existing_text(root, rel, sandbox.MAX_WRITE_BYTES + 1)
        try:
            safeopen.write_beneath(root, rel, content)
        except safeopen.Swapped as exc:
            raise ToolError(f"{path!r}: refused, {exc.strerror}") from None
        except IsADirectoryError:
            raise ToolError(f"{path!r} is a folder; give a file path") from None
        except OSError as exc:
            raise ToolError(f"{path!r}: cannot write ({exc.strerror})") from None
        _ctx.note("file", str(rel), "created" if before is None else "unchanged" if before == content else "changed")
        return f"Wrote {size} bytes to {rel}."

    @registry.tool("run_python", "Run Python code in a separate process in the output folder "
                   "(time-limited) and return its output.", {"code": "string"}, writer_only=True,
                   preview=lambda args, ctx: args["code"])
    def run_python(code: str, _ctx: ToolContext = None) -> str:
        mode = sandbox.python_mode(_ctx.run_python_enabled)
        if mode == "off":
            raise ToolError("run_python is turned off for this run")
        return sandbox.run_python(code, _ctx.output_dir, mode=mode, sources=_ctx.source_dirs)

    return registry
