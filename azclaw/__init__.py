"""azclaw: a memory-first multi-agent orchestrator built on AgentAZAll.

What a program writes is exported here; everything else is importable
from its module (``azclaw.events``, ``azclaw.turn``, ``azclaw.runlog.status``,
``azclaw.client``...).
"""

import logging

# A library configures no logging: a program (or the azclaw CLI) decides what is shown.
logging.getLogger("azclaw").addHandler(logging.NullHandler())

from .agent import Agent, default_team  # noqa: E402
from .client.pool import Pool  # noqa: E402
from .errors import AzclawError, ConfigError, RunAborted, ToolError  # noqa: E402
from .events import Stop  # noqa: E402
from .memory import TeamMemory  # noqa: E402
from .options import RunFolder, RunOptions  # noqa: E402
from .orchestrator import Orchestrator  # noqa: E402
from .tools import ToolContext, ToolRegistry, build_default_registry  # noqa: E402
from .topic import Topic  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ["Agent", "AzclawError", "ConfigError", "Orchestrator", "Pool", "RunAborted", "RunFolder", "RunOptions",
           "Stop", "TeamMemory", "ToolContext", "ToolError", "ToolRegistry", "Topic", "build_default_registry",
           "default_team", "__version__"]
