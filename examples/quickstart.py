"""The 20-line quick start: three agents build a small web API.

Point AZCLAW_ENDPOINT at any OpenAI-compatible server (default: a llama.cpp
server on localhost:8080), then: python examples/quickstart.py
"""
import os

from azclaw import Agent, Orchestrator

endpoint = os.environ.get("AZCLAW_ENDPOINT", "http://localhost:8080/v1/chat/completions")
architect = Agent("architect", role="Design the solution. Be specific about files and APIs.",
                  endpoint=endpoint)
developer = Agent("developer", role="Write the code. Follow the architect's design exactly.",
                  endpoint=endpoint, can_write=True)
reviewer = Agent("reviewer", role="Review for bugs, security issues and design violations.",
                 endpoint=endpoint)

orch = Orchestrator(agents=[architect, developer, reviewer])
orch.set_task("Build a REST API for a todo app with an SQLite backend, standard library only.")
orch.run(max_rounds=int(os.environ.get("AZCLAW_ROUNDS", "20")))

print(f"Files: {orch.stats.files_written}")
print(f"Memories: {orch.stats.memories_stored}")
