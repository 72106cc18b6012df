"""Confinement for model-written code on Linux: Landlock, seccomp,
namespaces, a control group and resource limits, applied by a small launcher
between fork and exec, and verified by a self-test.

``probe_sandbox()`` says what works here; ``run()`` runs code under it;
``protect_process()`` keeps same-user processes out of the orchestrator.
"""

from .level import SandboxLevel, probe_sandbox
from .oslimits import protect_process
from .policy import Limits, SourceView, source_view
from .runner import Outcome, SetupError, run

__all__ = ["Limits", "Outcome", "SandboxLevel", "SetupError", "SourceView", "probe_sandbox", "protect_process", "run",
           "source_view"]
