"""Offline wheels for tests: runs install pytest (and build setuptools) without a registry.

A run's environment starts empty and gets pytest installed when the project
does not declare it; tests must not reach the network, so they point pip (and
uv) at a local directory of wheels with ``PIP_NO_INDEX`` / ``PIP_FIND_LINKS``
(``UV_OFFLINE``/``UV_FIND_LINKS``). The wheels are rebuilt from the
distributions installed in the test interpreter: every file its RECORD lists
that lives in site-packages, and a fresh RECORD (pure-Python distributions
only, which pytest, its dependencies, setuptools and wheel are).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import shutil
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# what a run needs offline: pytest and its dependencies, and a PEP 517 backend
OFFLINE_DISTS = ("pytest", "iniconfig", "packaging", "pluggy", "pygments", "setuptools", "wheel",
                 "pip")
_SKIP_META = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def wheel_from_installed(name: str, out: Path) -> Path:
    """A ``py3-none-any`` wheel of the installed distribution ``name``, written to ``out``."""
    dist = md.distribution(name)
    norm = dist.metadata["Name"].replace("-", "_").replace(".", "_")
    target = out / f"{norm}-{dist.version}-py3-none-any.whl"
    records: list[str] = []
    dist_info = ""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in dist.files or []:
            parts = f.parts
            if parts[0] == ".." or "__pycache__" in parts or f.suffix == ".pyc":
                continue  # console scripts (pip regenerates them), bytecode
            if parts[0].endswith(".dist-info"):
                dist_info = parts[0]
                if f.name in _SKIP_META:
                    continue
            path = Path(str(f.locate()))
            if not path.is_file():
                continue
            data = path.read_bytes()
            zf.writestr(f.as_posix(), data)
            records.append(_record_line(f.as_posix(), data))
        records.append(f"{dist_info}/RECORD,,")
        zf.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return target


def build_wheelhouse(out: Path, names: tuple[str, ...] = OFFLINE_DISTS) -> Path:
    """``out`` filled with offline wheels of ``names``; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        wheel_from_installed(name, out)
    return out


def offline_env(*wheelhouses: Path) -> dict[str, str]:
    """Environment for a daemon whose runs may install only from ``wheelhouses``."""
    links = " ".join(str(w) for w in wheelhouses)
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": links, "UV_OFFLINE": "1",
            "UV_FIND_LINKS": ",".join(str(w) for w in wheelhouses), "UV_NO_INDEX": "1"}


def make_wheel(out: Path, name: str, version: str) -> Path:
    """A tiny pure wheel of ``name`` ``version`` in ``out``: module ``name`` with
    ``VERSION = "<version>"``, no dependencies (a check can tell which one is installed)."""
    out.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    target = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        records = []
        for arcname, data in files.items():
            zf.writestr(arcname, data)
            records.append(_record_line(arcname, data))
        records.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return target


def simple_index(wheelhouse: Path, out: Path) -> Path:
    """``out`` laid out as a PEP 503 index of ``wheelhouse`` (one directory per normalized
    name holding its wheels: a served directory listing is the project page)."""
    import re

    for whl in sorted(wheelhouse.glob("*.whl")):
        name = re.sub(r"[-_.]+", "-", whl.name.split("-", 1)[0]).lower()
        (out / name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(whl, out / name / whl.name)
    return out


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """``root`` served over HTTP on loopback (a package index for tools that only speak
    HTTP, like poetry); yields the base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
