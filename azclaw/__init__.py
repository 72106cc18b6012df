"""azclaw: a memory-first multi-agent orchestrator built on AgentAZAll."""

__version__ = "0.2.0"

from .agent import Agent
from .builtin_tools import build_default_registry
from .checkpoint import Checkpoint
from .confine import SandboxLevel, probe_sandbox, protect_process
from .errors import AzclawError, CheckpointError, ConfigError, EndpointError, RunAborted, ToolError
from .llm import Completion, LLMClient, ToolCall, Usage
from .memory import TeamMemory
from .orchestrator import Orchestrator
from .report import build_report
from .sandbox import check_output_folder
from .stats import AgentStats, RunStats
from .status import RunStatus, read_status
from .tools import Tool, ToolContext, ToolRegistry, ToolResult
from .topic import Phase, Probe, Topic

__all__ = [
    "Agent", "AgentStats", "AzclawError", "Checkpoint", "CheckpointError", "Completion", "ConfigError",
    "EndpointError", "LLMClient", "Orchestrator", "Phase", "Probe", "RunAborted", "RunStats",
    "TeamMemory", "Tool", "ToolCall", "ToolContext", "ToolError", "ToolRegistry", "ToolResult",
    "Topic", "Usage", "RunStatus", "SandboxLevel", "build_default_registry", "build_report",
    "check_output_folder", "probe_sandbox", "protect_process", "read_status", "__version__",
]
