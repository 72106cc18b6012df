"""The one error hierarchy of azclaw.

The library raises these; only the CLI turns them into a one-line message and
an exit code. A model's mistakes are never raised: they become tool results.
"""


class AzclawError(Exception):
    """Base class of every error azclaw raises on purpose."""


class ConfigError(AzclawError):
    """A topic file, agent spec or option is invalid."""


class EndpointError(AzclawError):
    """An LLM endpoint could not be reached or gave an unusable answer."""


class ContextOverflow(EndpointError):
    """The server refused a request longer than its context; ``limit`` is its size in tokens when it said."""

    def __init__(self, message: str, limit: int | None = None, prompt_tokens: int | None = None):
        super().__init__(message)
        self.limit = limit
        self.prompt_tokens = prompt_tokens


class CheckpointError(AzclawError):
    """A checkpoint is missing, unreadable, or belongs to another run."""


class RunAborted(AzclawError):
    """A run stopped early because it could not go on (its checkpoint is saved)."""


class ToolError(AzclawError):
    """A tool refused or failed a call; the message goes back to the model."""


class MemoryIndexError(AzclawError):
    """This Python's SQLite cannot hold the memory index (it lacks FTS5)."""


class LocalServerError(AzclawError):
    """The local model server is not installed, or did not start or stay up."""


class StorageError(AzclawError):
    """The journal, a checkpoint or a run's lock could not be written (a full disk, a read-only folder)."""


class RunLocked(AzclawError):
    """Another live run holds the same topic's journal in the same log folder."""


class McpServerError(AzclawError):
    """An MCP server could not be started, or could not list its tools."""
