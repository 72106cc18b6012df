"""The client wing: everything that speaks HTTP to a model server.

* ``transport``: one HTTP exchange, bounded in time and size (the only module
  that opens sockets to a model server)
* ``sse``: streamed replies; ``completion``: reading a reply into a ``Completion``
* ``textcalls``: tool calls written as text (``<tool_call>`` blocks)
* ``probe``: what a server tells of itself (models, context size)
* ``llm``: ``LLMClient``, a chat client with fail-over, retries and outages

Nothing here imports the rest of azclaw but ``azclaw.errors``.
"""

from .completion import Completion, ToolCall, Usage
from .llm import LLMClient
from .sse import Progress
from .transport import MAX_REPLY_BYTES

__all__ = ["Completion", "LLMClient", "MAX_REPLY_BYTES", "Progress", "ToolCall", "Usage"]
