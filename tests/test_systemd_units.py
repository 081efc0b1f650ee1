"""The systemd units, sysusers/tmpfiles snippets, example config and generated settings doc.

``systemd-analyze verify`` checks that ExecStart= names an executable, and the
units' real one (``/opt/autopack/venv/bin/autopackd``) exists only on an
installed box. So the test copies the units to a temporary directory and
rewrites that one path to an executable that exists here; everything else is
verified exactly as shipped.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from autopack.daemon._config import Settings, load_settings

from tests.conftest import ci_requires

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
SERVICE = SYSTEMD / "autopackd.service"
SOCKET = SYSTEMD / "autopackd.socket"
REAL_EXEC = "/opt/autopack/venv/bin/autopackd"

ci_requires("systemd-analyze", "systemd-sysusers", "systemd-tmpfiles")
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd); .ci/run must provide it"
)


def directives(path: Path) -> dict[str, list[str]]:
    """``Key`` → every value it is given in the unit (sections merged; enough for these units)."""
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def verifiable_copies(tmp_path: Path) -> list[Path]:
    exe = shutil.which("true")
    assert exe is not None
    service = SERVICE.read_text()
    assert f"ExecStart={REAL_EXEC} " in service
    (tmp_path / SERVICE.name).write_text(service.replace(f"ExecStart={REAL_EXEC} ", f"ExecStart={exe} "))
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    return [tmp_path / SERVICE.name, tmp_path / SOCKET.name]


def analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@needs_analyze
def test_units_verify_without_any_warning(tmp_path: Path) -> None:
    units = verifiable_copies(tmp_path)
    result = analyze("verify", *(str(u) for u in units), cwd=tmp_path)
    # An unknown or misspelled key only warns (exit 0), so stderr must be empty too.
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@needs_analyze
def test_verify_would_catch_a_bad_key(tmp_path: Path) -> None:
    units = verifiable_copies(tmp_path)
    units[0].write_text(units[0].read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    result = analyze("verify", *(str(u) for u in units), cwd=tmp_path)
    assert "NoNewPrivilege" in result.stderr


@needs_analyze
def test_security_exposure_stays_low() -> None:
    result = analyze("security", "--offline=yes", str(SERVICE))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for autopackd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:]
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    # 1.5 when written (systemd 252); 2.8 with what bubblewrap needs (the unit's header says
    # why). Raise this only with a comment in the unit saying why.
    assert exposure <= 3.0


def test_service_contract() -> None:
    d = directives(SERVICE)
    one = {k: v[-1] for k, v in d.items()}
    assert one["Type"] == "notify"
    assert one["NotifyAccess"] == "main"
    assert one["Restart"] == "on-failure"
    assert one["WatchdogSec"]
    assert one["StateDirectory"] == "autopack"
    assert one["RuntimeDirectory"] == "autopack"
    # Stopping the service must not delete the directory holding the socket unit's socket.
    assert one["RuntimeDirectoryPreserve"] == "yes"
    assert one["User"] == "autopack"
    assert "DynamicUser" not in one
    assert one["LoadCredential"] == "anthropic_api_key:/etc/autopack/anthropic_api_key"
    assert one["ExecStart"] == f"{REAL_EXEC} --config /etc/autopack/autopackd.toml"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Requires"] == "autopackd.socket"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("NoNewPrivileges", "yes", id="no-new-privileges"),
        pytest.param("ProtectSystem", "strict", id="protect-system"),
        pytest.param("ProtectHome", "yes", id="protect-home"),
        pytest.param("PrivateTmp", "yes", id="private-tmp"),
        pytest.param("PrivateDevices", "yes", id="private-devices"),
        pytest.param("ProtectKernelTunables", "no", id="kernel-tunables-off-for-bwrap-proc"),
        pytest.param("ProtectKernelModules", "yes", id="kernel-modules"),
        pytest.param("ProtectKernelLogs", "no", id="kernel-logs-off-for-bwrap-proc"),
        pytest.param("ProtectControlGroups", "yes", id="control-groups"),
        pytest.param("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
                     id="address-families"),
        pytest.param("SystemCallFilter", "@system-service @mount", id="syscall-filter"),
        pytest.param("RestrictNamespaces", "user mnt pid net ipc uts cgroup", id="namespaces-for-bwrap"),
        pytest.param("LockPersonality", "yes", id="personality"),
        pytest.param("CapabilityBoundingSet", "", id="no-capabilities"),
        pytest.param("UMask", "0077", id="umask"),
        pytest.param("MemoryDenyWriteExecute", "no", id="mdwe-off-for-jits"),
    ],
)
def test_service_hardening(key: str, value: str) -> None:
    assert directives(SERVICE)[key][-1] == value


@pytest.mark.parametrize(
    "key", ["MemoryDenyWriteExecute", "ProcSubset", "PrivateUsers", "RestrictAddressFamilies", "SystemCallFilter",
            "ProtectKernelTunables", "ProtectKernelLogs", "RestrictNamespaces"]
)
def test_looser_settings_say_why(key: str) -> None:
    """Each deliberately loose setting is preceded by a comment starting 'Looser'."""
    lines = SERVICE.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
    comment = []
    for line in reversed(lines[:index]):
        if not line.startswith("#"):
            break
        comment.append(line)
    assert any("Looser" in line for line in comment), f"{key} has no 'Looser: why' comment"


def test_socket_contract() -> None:
    one = {k: v[-1] for k, v in directives(SOCKET).items()}
    assert one["ListenStream"] == "%t/autopack/autopackd.sock"
    assert one["SocketMode"] == "0660"
    assert one["SocketGroup"] == "autopack"
    assert one["Service"] == "autopackd.service"


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="systemd-sysusers --root writes root-owned files")
def test_sysusers_creates_the_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr/lib/sysusers.d").mkdir(parents=True)
    shutil.copy(SYSTEMD / "autopack.sysusers", tmp_path / "usr/lib/sysusers.d/autopack.conf")
    result = subprocess.run(["systemd-sysusers", f"--root={tmp_path}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    passwd = (tmp_path / "etc/passwd").read_text()
    group = (tmp_path / "etc/group").read_text()
    user = next(line.split(":") for line in passwd.splitlines() if line.startswith("autopack:"))
    assert user[5:] == ["/var/lib/autopack", "/usr/sbin/nologin"]
    assert any(line.startswith("autopack:") for line in group.splitlines())

    if shutil.which("systemd-tmpfiles") is None:
        return
    (tmp_path / "usr/lib/tmpfiles.d").mkdir(parents=True)
    shutil.copy(SYSTEMD / "autopack.tmpfiles", tmp_path / "usr/lib/tmpfiles.d/autopack.conf")
    result = subprocess.run(
        ["systemd-tmpfiles", "--create", f"--root={tmp_path}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    st = (tmp_path / "etc/autopack").stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o750, 0, int(user[3]))


# --- example config and generated docs -------------------------------------


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_settings", ROOT / "docs" / "gen_settings.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("path", "render"),
    [
        pytest.param(ROOT / "docs" / "settings.md", "render_settings_md", id="settings.md"),
        pytest.param(SYSTEMD / "autopackd.toml", "render_example_toml", id="autopackd.toml"),
    ],
)
def test_generated_files_are_up_to_date(path: Path, render: str) -> None:
    expected = getattr(load_generator(), render)()
    assert path.read_text() == expected, f"{path.name} is stale: run .venv/bin/python docs/gen_settings.py"


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    example = (SYSTEMD / "autopackd.toml").read_text()
    for name in Settings.__struct_fields__:
        assert f"| `{name}` |" in text
        assert f"# {name} = " in example


def test_generator_check_mode_exits_zero_when_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_settings.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def uncommented(pattern: str) -> str:
    """The example config with the matching ``# key = value`` lines uncommented."""
    out = []
    for line in (SYSTEMD / "autopackd.toml").read_text().splitlines():
        if re.fullmatch(pattern, line):
            out.append(line[2:])
    return "\n".join(out) + "\n"


def test_example_config_as_shipped_loads(tmp_path: Path) -> None:
    load_settings(str(SYSTEMD / "autopackd.toml"), env={})


def test_example_defaults_are_the_real_defaults(tmp_path: Path) -> None:
    config = tmp_path / "defaults.toml"
    # Every '# key = value' line that is not an example, minus the two derived paths.
    text = uncommented(r"# (?!state_dir |socket )[a-z_]+ = .*(?<!# example)")
    config.write_text(text)
    loaded = load_settings(str(config), env={})
    defaults = Settings()
    for name in Settings.__struct_fields__:
        if name not in ("state_dir", "socket"):
            assert getattr(loaded, name) == getattr(defaults, name), name
    # TOML has no null: settings unset by default appear only as examples.
    with_value = [n for n in Settings.__struct_fields__ if getattr(defaults, n) is not None]
    assert text.count("\n") == len(with_value) - 2


def test_example_values_load(tmp_path: Path) -> None:
    config = tmp_path / "examples.toml"
    config.write_text(uncommented(r"# [a-z_]+ = .*# example") + 'state_dir = "/var/lib/autopack"\n')
    loaded = load_settings(str(config), env={})
    assert loaded.socket_group == "autopack"
    assert loaded.prices == {"claude-sonnet-4-6": [3.0, 15.0, 3.75, 0.3]}
