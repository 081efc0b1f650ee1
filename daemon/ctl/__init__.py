"""autopackctl, the command-line client: a package of its own.

It talks to ``autopackd`` only through :mod:`autopack.protocol` over the control
socket and never imports the server (no trio, no anthropic, no sqlite). Pure
cores it needs for offline commands (the classifier, the plan normalizer) are
imported lazily by the one subcommand that uses them.

Layout:
    _main.py      entry point: global options in any position, the COMMANDS table,
                  one-line errors; imports only the chosen subcommand's module
    _argparse.py  ArgumentParser with one-line errors and did-you-mean
    _client.py    the blocking socket client (Client, resolve_socket)
    _errors.py    the client's exceptions
    _runs.py      submit, list, status, wait, logs, cancel, report, health
    _stats.py     stats;  _memory.py context, lessons;  _normalize.py normalize;
    _classify.py  classify, patterns

To add a subcommand: write ``register(sub)`` in a module here (``sub`` is an argparse
subparsers object; call ``sub.add_parser(NAME, ...)`` and ``set_defaults(func=...)``,
the function takes the parsed ``args`` and returns the exit status), then add
``NAME: (module, one-line help)`` to ``COMMANDS`` in ``_main.py``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "main": "._main",
    "Client": "._client",
    "resolve_socket": "._client",
    "CtlError": "._errors",
    "DaemonUnavailable": "._errors",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
