"""The run spec: the external contract of what a person submits.

Field names here are a contract (DESIGN.md, *External contracts*): add fields
with defaults freely, rename nothing. ``load_spec`` / ``validate_spec`` list
*every* problem (field path and reason) instead of stopping at the first,
so a person fixes a broken plan file in one go.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from ._errors import SpecError

PHASE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
PhaseKind = Literal["build", "command"]
NetworkPolicy = Literal["none", "install", "all"]
NETWORK_POLICIES = ("none", "install", "all")


class Limits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=False):
    """Per-run limits. Every field has a default."""

    max_attempts: int = 3  # per phase
    token_budget: int = 400_000  # per run
    wall_time_s: float = 7200  # per run
    phase_wall_time_s: float | None = None  # per phase; None = only the run's limit
    max_output_bytes: int = 1_000_000  # per check, captured output kept (head and tail)
    check_output_limit_bytes: int = 64 * 1024 * 1024  # a check printing more is stopped
    doctor_calls_per_phase: int = 2
    doctor_calls_per_run: int = 6
    usd_budget: float | None = None  # optional, priced with the config's price table
    phase_token_budget: int | None = None  # per phase (all its attempts and Doctor calls)
    phase_usd_budget: float | None = None  # per phase, priced like usd_budget


class PhaseSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One phase of a run."""

    id: str
    goal: str
    kind: PhaseKind = "build"
    scope: list[str] = []
    checks: list[str] = []
    timeout_s: float = 900
    # a check whose runner reports zero tests ran fails the phase (no_tests_collected)
    # unless this is true (e.g. a lint-only phase that calls pytest --collect-only)
    allow_no_tests: bool = False


class RunSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A run: intention, phases, limits."""

    goal: str
    phases: list[PhaseSpec]
    repo: str | None = None
    base: str = "HEAD"
    constraints: list[str] = []
    non_goals: list[str] = []
    acceptance: list[str] = []
    # shell commands that fill the run's environment, run once before the first check;
    # None = the detected install steps (see `autopackctl detect`), [] = install nothing
    setup: list[str] | None = None
    limits: Limits = msgspec.field(default_factory=Limits)
    # network inside the run's sandbox: "none", "install" (only the install step,
    # mitigations and fix commands), "all"; None = the daemon's sandbox_network setting
    network: NetworkPolicy | None = None
    # the phases' working directory, relative to the repository root ("" = the root);
    # `autopackctl submit --repo <subdir>` sets it
    workdir: str = ""


_TOP_KEYS = {f for f in RunSpec.__struct_fields__}
_PHASE_KEYS = {f for f in PhaseSpec.__struct_fields__}
_LIMIT_KEYS = {f for f in Limits.__struct_fields__}


def _unknown(key: Any, known: set[str]) -> str:
    """"unknown field", with the closest known field name when one is close."""
    import difflib  # only on this error path

    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    return f"unknown field (did you mean {close[0]!r}?)" if close else "unknown field"


def _check_str_list(value: Any, path: str, problems: list[tuple[str, str]]) -> None:
    if not isinstance(value, list):
        problems.append((path, f"must be a list of strings, got {type(value).__name__}"))
        return
    for i, item in enumerate(value):
        if not isinstance(item, str):
            problems.append((f"{path}[{i}]", f"must be a string, got {type(item).__name__}"))


def _check_text(value: Any, path: str, problems: list[tuple[str, str]]) -> None:
    if not isinstance(value, str):
        problems.append((path, f"must be a string, got {type(value).__name__}"))
    elif not value.strip():
        problems.append((path, "must not be empty"))


def _check_number(value: Any, path: str, problems: list[tuple[str, str]], *, integer: bool,
                  allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a number"
        problems.append((path, f"must be {kind}, got {type(value).__name__}"))
    elif value < 0 or (value == 0 and not allow_zero):
        problems.append((path, "must be >= 0" if allow_zero else "must be > 0"))


def _validate_limits(raw: Any, problems: list[tuple[str, str]]) -> None:
    if not isinstance(raw, dict):
        problems.append(("limits", "must be a table"))
        return
    for key in sorted(set(raw) - _LIMIT_KEYS):
        problems.append((f"limits.{key}", _unknown(key, _LIMIT_KEYS)))
    for key in ("max_attempts", "token_budget", "max_output_bytes", "check_output_limit_bytes",
                "doctor_calls_per_phase",
                "doctor_calls_per_run"):
        if key in raw:
            _check_number(raw[key], f"limits.{key}", problems, integer=True,
                          allow_zero=key.startswith("doctor_calls"))
    if "phase_token_budget" in raw:
        _check_number(raw["phase_token_budget"], "limits.phase_token_budget", problems,
                      integer=True, allow_none=True)
    for key in ("wall_time_s", "phase_wall_time_s", "usd_budget", "phase_usd_budget"):
        if key in raw:
            _check_number(raw[key], f"limits.{key}", problems, integer=False,
                          allow_none=key != "wall_time_s")


def _validate_phase(raw: Any, path: str, seen: set[str], problems: list[tuple[str, str]]) -> None:
    if not isinstance(raw, dict):
        problems.append((path, "must be a table"))
        return
    for key in sorted(set(raw) - _PHASE_KEYS):
        problems.append((f"{path}.{key}", _unknown(key, _PHASE_KEYS)))
    pid = raw.get("id")
    if pid is None:
        problems.append((f"{path}.id", "required"))
    elif not isinstance(pid, str) or not PHASE_ID_RE.match(pid):
        problems.append((f"{path}.id", f"must match [a-z0-9][a-z0-9_-]*, got {pid!r}"))
    elif pid in seen:
        problems.append((f"{path}.id", f"duplicate id {pid!r}"))
    else:
        seen.add(pid)
    if "goal" not in raw:
        problems.append((f"{path}.goal", "required"))
    else:
        _check_text(raw["goal"], f"{path}.goal", problems)
    kind = raw.get("kind", "build")
    if kind not in ("build", "command"):
        problems.append((f"{path}.kind", f"must be 'build' or 'command', got {kind!r}"))
    for key in ("scope", "checks"):
        if key in raw:
            _check_str_list(raw[key], f"{path}.{key}", problems)
    if "timeout_s" in raw:
        _check_number(raw["timeout_s"], f"{path}.timeout_s", problems, integer=False)
    if "allow_no_tests" in raw and not isinstance(raw["allow_no_tests"], bool):
        problems.append((f"{path}.allow_no_tests",
                         f"must be true or false, got {type(raw['allow_no_tests']).__name__}"))


def validate_spec(raw: Any) -> RunSpec:
    """Validate a decoded spec (dict) and return a :class:`RunSpec`.

    Raises :class:`SpecError` listing every problem found.
    """
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        raise SpecError([("", "a run spec must be a table/object at the top level")])
    for key in sorted(set(raw) - _TOP_KEYS):
        problems.append((key, _unknown(key, _TOP_KEYS)))
    if "goal" not in raw:
        problems.append(("goal", "required"))
    else:
        _check_text(raw["goal"], "goal", problems)
    for key in ("repo", "base", "workdir"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            problems.append((key, "must be a string"))
    workdir = raw.get("workdir")
    if isinstance(workdir, str) and (workdir.startswith("/") or ".." in workdir.split("/")):
        problems.append(("workdir", f"must be a relative path inside the repository, got {workdir!r}"))
    network = raw.get("network")
    if network is not None and network not in NETWORK_POLICIES:
        problems.append(("network", f"must be one of {', '.join(NETWORK_POLICIES)}, got {network!r}"))
    for key in ("constraints", "non_goals", "acceptance"):
        if key in raw:
            _check_str_list(raw[key], key, problems)
    if raw.get("setup") is not None:
        _check_str_list(raw["setup"], "setup", problems)
    if "limits" in raw:
        _validate_limits(raw["limits"], problems)
    phases = raw.get("phases")
    if phases is None:
        problems.append(("phases", "required: at least one [[phases]] entry"))
    elif not isinstance(phases, list):
        problems.append(("phases", "must be a list of tables"))
    elif not phases:
        problems.append(("phases", "must contain at least one phase"))
    else:
        seen: set[str] = set()
        for i, phase in enumerate(phases):
            _validate_phase(phase, f"phases[{i}]", seen, problems)
    if problems:
        raise SpecError(problems)
    try:
        return msgspec.convert(raw, RunSpec)
    except msgspec.ValidationError as exc:  # belt and braces: the walker above should catch all
        raise SpecError([("", str(exc))]) from None


def parse_spec_text(text: str, *, fmt: Literal["toml", "json"]) -> RunSpec:
    """Parse TOML or JSON text into a validated :class:`RunSpec` (raises :class:`SpecError`)."""
    import json  # here, not at the top: autopackctl status/list never parse a spec
    import tomllib

    try:
        raw = tomllib.loads(text) if fmt == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise SpecError([("", f"not valid {fmt.upper()}: {exc}")]) from None
    return validate_spec(raw)


def load_spec(path: str) -> RunSpec:
    """Load a spec file (``.json`` is JSON, anything else TOML). Raises :class:`SpecError`/``OSError``."""
    with open(path, "rb") as fh:
        data = fh.read(4 * 1024 * 1024 + 1)
    if len(data) > 4 * 1024 * 1024:
        raise SpecError([("", "spec file is larger than 4 MiB")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([("", "spec file is not UTF-8 text")]) from None
    fmt: Literal["toml", "json"] = "json" if path.endswith(".json") else "toml"
    return parse_spec_text(text, fmt=fmt)


def spec_to_builtins(spec: RunSpec) -> dict[str, Any]:
    """The spec as plain JSON-able builtins (keys as in the contract)."""
    result: dict[str, Any] = msgspec.to_builtins(spec)
    return result


def spec_to_toml(spec: RunSpec) -> str:
    """Render a spec as TOML that :func:`parse_spec_text` loads back identical."""
    data = spec_to_builtins(spec)
    out: list[str] = []

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            import json

            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(type(v))

    for key, v in data.items():
        if key in ("limits", "phases") or v is None:
            continue
        out.append(f"{key} = {val(v)}")
    out.append("")
    out.append("[limits]")
    for key, v in data["limits"].items():
        if v is not None:
            out.append(f"{key} = {val(v)}")
    for phase in data["phases"]:
        out.append("")
        out.append("[[phases]]")
        for key, v in phase.items():
            out.append(f"{key} = {val(v)}")
    return "\n".join(out) + "\n"


def run_spec_json_schema() -> dict[str, Any]:
    """JSON schema of :class:`RunSpec`, generated from the msgspec types (for the LLM tool)."""
    schema: dict[str, Any] = msgspec.json.schema(RunSpec)
    return schema
