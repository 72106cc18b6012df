"""A custom tool: let every agent search the sources for a word.

Run: python examples/custom_tool.py   (AZCLAW_ENDPOINT as in quickstart.py)
"""
import os
from pathlib import Path

from azclaw import Agent, Orchestrator, ToolError, build_default_registry

endpoint = os.environ.get("AZCLAW_ENDPOINT", "http://localhost:8080/v1/chat/completions")
sources = Path(__file__).parent / "bank-cobol"
registry = build_default_registry()


@registry.tool("search_code", "Find the lines of the source files that contain a word.",
               {"word": "string", "max_hits": "integer"})
def search_code(word: str, max_hits: int = 20, _ctx=None) -> str:
    if not word.strip():
        raise ToolError("word is empty")  # goes back to the model as an error result
    hits = []
    for folder in _ctx.source_dirs:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if word.lower() in line.lower():
                        hits.append(f"{path.relative_to(folder)}:{n}: {line.strip()}")
    return "\n".join(hits[:max_hits]) or f"No line contains {word!r}."


team = [Agent("analyst", role="Explain what the COBOL program does, rule by rule.", endpoint=endpoint),
        Agent("developer", role="Port the rules to Python in bank.py.", endpoint=endpoint, can_write=True)]
orch = Orchestrator(team, registry=registry, source_dirs=[sources])
orch.set_task("Port the account update program in cbl/ to Python, keeping every business rule.")
orch.run(max_rounds=int(os.environ.get("AZCLAW_ROUNDS", "6")))
print(orch.summary())
