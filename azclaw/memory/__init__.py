"""The team's memory: AgentAZAll text files (the truth) and derived search indexes.

* ``layout``: the AgentAZAll on-disk layout and what azclaw writes in the files (the only module that knows them)
* ``team``: ``TeamMemory``, remember, recall and the rounds' messages over a whole team
* ``rank``: the query's word pairs a memory holds as phrases (before bm25's order)
* ``subjects``: which memories are on one subject (the newer ranks first); ``hits``: how recall shows them
* ``index``, ``store``, ``watch``: the SQLite full-text indexes that follow the files
"""

from .hits import HIT_CHARS, Memory, MemoryHit, MessageHit, excerpt
from .layout import MemoryEntry, MemoryRoot, parse_entries, sanitize_title
from .team import INDEX_ENTRIES, TeamMemory, query_terms

__all__ = ["HIT_CHARS", "INDEX_ENTRIES", "Memory", "MemoryEntry", "MemoryHit", "MemoryRoot", "MessageHit",
           "TeamMemory", "excerpt", "parse_entries", "query_terms", "sanitize_title"]
