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
import zipfile
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
