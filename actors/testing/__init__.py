"""autopack.testing: fakes at autopack's seams, for tests, benches and the offline demo.

Installed with autopack (the offline demo uses it), imported by nothing of the daemon
itself. It lives in ``actors/testing/`` and installs as ``autopack.testing`` (setuptools
``package-dir``).

* :class:`ScriptedServer` / :func:`serve_scripted` — a scripted Messages API server on
  loopback that the real ``anthropic`` SDK talks to (JSON and server-sent events, 429s,
  529s, hangs); it answers from a *scenario* (:func:`load_scenario`), never from a model.
  As a process: ``python -m autopack.testing --scenario FILE [--port 0]`` prints its URL.
* ``scenarios/`` — the shipped scenarios (``demo.json``: the offline demo's Builder).
"""

from __future__ import annotations

from pathlib import Path

from ._modelserver import ScriptedServer as ScriptedServer
from ._modelserver import TokenModel as TokenModel
from ._modelserver import load_scenario as load_scenario
from ._modelserver import serve_scripted as serve_scripted

#: The folder of the shipped scenario files (``demo.json``, ``builder_basic.json``).
SCENARIOS = Path(__file__).resolve().parent / "scenarios"

__all__ = ["SCENARIOS", "ScriptedServer", "TokenModel", "load_scenario", "serve_scripted"]
