"""autopackd: supervisor, store, control and health servers, and autopackctl.

Names are loaded lazily (PEP 562) so that ``autopackctl`` imports neither trio
nor anthropic just because it lives in this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Daemon": "._app",
    "Settings": "._config",
    "load_settings": "._config",
    "ConfigError": "._config",
    "Client": ".ctl._client",
    "DaemonUnavailable": ".ctl._client",
    "resolve_socket": ".ctl._client",
    "Store": "._store",
    "Supervisor": "._supervisor",
    "SupervisorGaveUp": "._supervisor",
    "AmbiguousRun": "._errors",
    "BackupError": "._errors",
    "ClientError": "._errors",
    "DaemonError": "._errors",
    "DiffUnavailable": "._errors",
    "RetryRefused": "._errors",
    "SchemaTooNew": "._errors",
    "StateDirBusy": "._errors",
    "StoreDamaged": "._errors",
    "StoreUnavailable": "._errors",
    "UnknownRun": "._errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
