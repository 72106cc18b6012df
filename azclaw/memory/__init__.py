"""The team's memory: AgentAZAll text files (the truth) and a derived search index.

* ``layout``: the AgentAZAll on-disk layout (the only module that knows it)
* ``team``: ``TeamMemory``, remember and recall over a whole team
* ``index``, ``store``, ``watch``: the SQLite full-text index that follows the files
"""

from .layout import MemoryRoot, sanitize_title
from .team import HIT_CHARS, INDEX_ENTRIES, Memory, TeamMemory, excerpt, query_terms

__all__ = ["HIT_CHARS", "INDEX_ENTRIES", "Memory", "MemoryRoot", "TeamMemory", "excerpt", "query_terms",
           "sanitize_title"]
