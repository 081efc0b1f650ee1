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
    "InvalidTransition": "._states",
    "CommandResult": "._proc",
    "run_command": "._proc",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
