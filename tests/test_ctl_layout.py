"""The client's layout: ``autopack.daemon.ctl`` imports only ``autopack.protocol`` and its
own modules; a subcommand may add the pure cores it needs, never the server, trio, anyio,
anthropic or sqlite3. Checked in a fresh interpreter (``sys.modules`` after the imports)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NEVER = ("trio", "anyio", "anthropic", "sqlite3", "_sqlite3", "httpx", "prometheus_client")

#: Pure cores a subcommand imports when it runs (classify, normalize, detect, submit's
#: repository checks): no I/O at import, no trio.
PURE_CORES = (
    "autopack.actors",  # the package: names loaded lazily (PEP 562)
    "autopack.actors._errors", "autopack.actors._git", "autopack.actors._normalize",
    "autopack.actors._plan_text", "autopack.actors._pydetect", "autopack.actors._toolchain",
    "autopack.actors.classifier", "autopack.actors.classifier._core",
    "autopack.actors.classifier._distmap", "autopack.actors.classifier._mitigations",
    "autopack.actors.classifier._patterns", "autopack.actors.classifier._summary",
    "autopack.actors.classifier._text",
)


def _imported_after(code: str) -> list[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    return list(json.loads(res.stdout.splitlines()[-1]))


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_client_package_and_its_entry_point_import_only_protocol() -> None:
    mods = _imported_after("import autopack.daemon.ctl, autopack.daemon.ctl._main, "
                           "autopack.daemon.ctl._client\n"
                           "from autopack.daemon.ctl import Client, CtlError")
    assert [m for m in mods if _top(m) in NEVER] == []
    ours = [m for m in mods if _top(m) == "autopack"]
    stray = [m for m in ours if m not in ("autopack", "autopack.daemon")
             and not m.startswith(("autopack.daemon.ctl", "autopack.protocol"))]
    assert stray == []


def test_every_client_module_keeps_out_of_the_server() -> None:
    mods = _imported_after(
        "import importlib, pkgutil\nimport autopack.daemon.ctl as ctl\n"
        "for info in pkgutil.iter_modules(ctl.__path__, 'autopack.daemon.ctl.'):\n"
        "    importlib.import_module(info.name)\n")
    assert "autopack.daemon.ctl._runs" in mods  # the probe did import the subcommands
    assert [m for m in mods if _top(m) in NEVER] == []
    server = [m for m in mods if m.startswith("autopack.daemon.")
              and not m.startswith("autopack.daemon.ctl")]
    assert server == []
    actors = [m for m in mods if m.startswith("autopack.actors") and m not in PURE_CORES]
    assert actors == []


@pytest.mark.parametrize("module", ["autopack.daemon._store", "autopack.actors._memory"])
def test_the_probe_sees_a_server_import(module: str) -> None:
    """The check can fail: a server module does pull in what the client must not."""
    mods = _imported_after(f"import {module}")
    assert {"trio", "sqlite3"} & {_top(m) for m in mods}
