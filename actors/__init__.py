"""autopack's actors and their pure cores.

Names are loaded lazily (PEP 562): importing a pure core (normalizer,
classifier patterns, toolchain detection) does not pull in trio or anthropic.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RunActor": "._run",
    "RunServices": "._run",
    "Scheduler": "._scheduler",
    "RunState": "._states",
    "PhaseState": "._states",
    "CommandResult": "._proc",
    "run_command": "._proc",
    "BudgetExhausted": "._errors",
    "DoctorMalformed": "._errors",
    "ExternalError": "._errors",
    "GitError": "._errors",
    "InputError": "._errors",
    "InvalidTransition": "._errors",
    "LLMAuthError": "._errors",
    "LLMError": "._errors",
    "LLMRequestError": "._errors",
    "LLMUnavailable": "._errors",
    "PathRefused": "._errors",
    "PlanError": "._errors",
    "PriceError": "._errors",
    "RunLocked": "._errors",
    "SandboxUnavailable": "._errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
