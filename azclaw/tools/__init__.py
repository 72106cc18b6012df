"""The tools wing: what agents can do, and the limits around it.

* ``registry``: ``ToolRegistry`` (``@registry.tool``), ``Tool``, ``ToolContext``, ``ToolResult``
* ``builtin``: recall, remember, read_file, list_files, write_file, run_python
* ``sandbox``: where agents may read and write, and how ``run_python`` runs
  (under ``confine``, the operating-system sandbox); ``safeopen``: opening
  files without following links
* ``approval``: a person says yes or no before a tool runs (``--approve``)
"""

from .builtin import build_default_registry
from .registry import Tool, ToolContext, ToolRegistry, ToolResult

__all__ = ["Tool", "ToolContext", "ToolRegistry", "ToolResult", "build_default_registry"]
