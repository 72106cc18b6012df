"""A stop condition of your own: an observer that returns Stop.

The run ends after the turn in which the team has written three files
(reason "done"), instead of running to its last round:
python examples/stop_condition.py
"""
import os

from azclaw import Agent, Orchestrator, Stop
from azclaw.events import TurnFinished

endpoint = os.environ.get("AZCLAW_ENDPOINT", "http://localhost:8080/v1/chat/completions")
written = set()


def three_files(event):
    if isinstance(event, TurnFinished):
        written.update(event.turn.files)
        if len(written) >= 3:
            return Stop("done", f"three files written: {', '.join(sorted(written))}")


orch = Orchestrator([Agent("architect", endpoint=endpoint), Agent("developer", endpoint=endpoint, can_write=True)],
                    observers=[three_files])
orch.set_task("Write a command-line todo app in three files: storage.py, commands.py and main.py.")
orch.run(max_rounds=int(os.environ.get("AZCLAW_ROUNDS", "20")))
print(orch.ending)
