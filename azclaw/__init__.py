"""azclaw: a memory-first multi-agent orchestrator built on AgentAZAll."""

__version__ = "0.2.0"

from .agent import Agent
from .builtin_tools import build_default_registry
from .checkpoint import Checkpoint
from .errors import (AzclawError, CheckpointError, ConfigError, EndpointError, LocalServerError, RunAborted,
                     ToolError)
from .llm import Completion, LLMClient, ToolCall, Usage
from .memory import TeamMemory
from .orchestrator import Orchestrator
from .report import build_report
from .stats import AgentStats, RunStats
from .status import RunStatus, read_status
from .tools import Tool, ToolContext, ToolRegistry, ToolResult
from .topic import Phase, Probe, Topic

__all__ = [
    "Agent", "AgentStats", "AzclawError", "Checkpoint", "CheckpointError", "Completion", "ConfigError",
    "EndpointError", "LLMClient", "LocalServerError", "Orchestrator", "Phase", "Probe", "RunAborted", "RunStats",
    "TeamMemory", "Tool", "ToolCall", "ToolContext", "ToolError", "ToolRegistry", "ToolResult",
    "Topic", "Usage", "RunStatus", "build_default_registry", "build_report", "read_status", "__version__",
]
