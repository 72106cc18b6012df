"""The local wing: a llama.cpp model server on this machine
(``pip install 'azclaw[local]'``).

* ``server``: ``LocalServer``, one supervised llama-cpp-python server
* ``team``: ``LocalTeamServer``, one server per agent
* ``child``: the server process itself (``python -m azclaw.local.child``)
* ``models``: what ``--model`` names (bundled, a file, ``hf:OWNER/REPO/FILE.gguf``)

Importing this wing does not import llama-cpp-python; only the child does.
"""

from .server import LocalServer
from .team import LocalTeamServer

__all__ = ["LocalServer", "LocalTeamServer"]
