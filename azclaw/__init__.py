"""azclaw: a memory-first multi-agent orchestrator built on AgentAZAll."""

__version__ = "0.3.0"

import logging

# A library configures no logging: a program (or the azclaw CLI) decides what is shown.
logging.getLogger("azclaw").addHandler(logging.NullHandler())

from .agent import Agent, default_team  # noqa: E402
from .tools.builtin import build_default_registry  # noqa: E402
from .checkpoint import Checkpoint, RunState  # noqa: E402
from .tools.confine import SandboxLevel, probe_sandbox, protect_process  # noqa: E402
from .errors import (AzclawError, CheckpointError, ConfigError, ContextOverflow, EndpointError,  # noqa: E402
                     LocalServerError, MemoryIndexError, RunAborted, ToolError)
from .client.llm import Completion, LLMClient, Progress, ToolCall, Usage  # noqa: E402
from .memory import TeamMemory  # noqa: E402
from .orchestrator import Orchestrator  # noqa: E402
from .runlog.reader import RunLog  # noqa: E402
from .runlog.report import build_report  # noqa: E402
from .runlog.status import RunStatus, read_status  # noqa: E402
from .tools.sandbox import check_output_folder  # noqa: E402
from .stats import AgentStats, Coherence, RunStats  # noqa: E402
from .tools.registry import Tool, ToolContext, ToolRegistry, ToolResult  # noqa: E402
from .topic import Phase, Probe, Topic  # noqa: E402
from .turn import Turn, take_turn  # noqa: E402

__all__ = [
    "Agent", "AgentStats", "AzclawError", "Checkpoint", "CheckpointError", "Coherence", "Completion",
    "ConfigError", "EndpointError", "LLMClient", "LocalServerError", "MemoryIndexError", "Orchestrator", "Phase",
    "Probe", "RunAborted", "RunLog", "RunState", "RunStats", "RunStatus", "TeamMemory", "Tool", "ToolCall",
    "ToolContext", "ToolError", "ToolRegistry", "ToolResult", "Topic", "Turn", "Usage", "build_default_registry",
    "build_report", "default_team", "read_status", "take_turn", "__version__",
    "SandboxLevel", "check_output_folder", "probe_sandbox", "protect_process", "ContextOverflow", "Progress",
]
