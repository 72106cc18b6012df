"""azclaw: a memory-first multi-agent orchestrator built on AgentAZAll."""

__version__ = "0.2.0"

from .agent import Agent
from .builtin_tools import build_default_registry
from .checkpoint import Checkpoint
from .errors import AzclawError, CheckpointError, ConfigError, EndpointError, RunAborted, ToolError
from .llm import Completion, LLMClient, ToolCall, Usage
from .memory import TeamMemory
from .orchestrator import Orchestrator
from .stats import AgentStats, RunStats
from .tools import Tool, ToolContext, ToolRegistry, ToolResult
from .topic import Phase, Probe, Topic

__all__ = [
    "Agent", "AgentStats", "AzclawError", "Checkpoint", "CheckpointError", "Completion", "ConfigError",
    "EndpointError", "LLMClient", "Orchestrator", "Phase", "Probe", "RunAborted", "RunStats",
    "TeamMemory", "Tool", "ToolCall", "ToolContext", "ToolError", "ToolRegistry", "ToolResult",
    "Topic", "Usage", "build_default_registry", "__version__",
]
