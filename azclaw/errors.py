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


class CheckpointError(AzclawError):
    """A checkpoint is missing, unreadable, or belongs to another run."""


class RunAborted(AzclawError):
    """A run stopped early because it could not go on (its checkpoint is saved)."""


class ToolError(AzclawError):
    """A tool refused or failed a call; the message goes back to the model."""


class LocalServerError(AzclawError):
    """The local model server is not installed, or did not start or stay up."""
