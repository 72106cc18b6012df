"""The local wing: a llama.cpp model server on this machine
(``pip install 'azclaw[local]'``).

* ``server``: ``LocalServer``, one supervised llama-cpp-python server
* ``team``: ``LocalTeamServer``, one server per agent
* ``child``: the server process itself (``python -m azclaw.local.child``)

Importing this wing does not import llama-cpp-python; only the child does.
"""

from .server import LocalServer
from .team import LocalTeamServer

__all__ = ["LocalServer", "LocalTeamServer"]
