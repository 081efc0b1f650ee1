"""The run spec: the external contract of what a person submits.

Field names here are a contract (DESIGN.md, *External contracts*): add fields
with defaults freely, rename nothing. ``load_spec`` / ``validate_spec`` list
*every* problem (field path and reason) instead of stopping at the first,
so a person fixes a broken plan file in one go.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import msgspec

from ._errors import SpecError

PHASE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
PhaseKind = Literal["build", "command"]
NetworkPolicy = Literal["none", "install", "all"]
NETWORK_POLICIES = ("none", "install", "all")


# Documented bounds (README "Run spec", docs/operations.md): every number is finite and
# within [min, max]; ``None`` is allowed only where the field's default is ``None``.
DAY_S = 86_400.0
LIMIT_BOUNDS: dict[str, tuple[float, float, bool]] = {  # field -> (min, max, integer)
    "max_attempts": (1, 100, True),
    "token_budget": (1, 1_000_000_000, True),
    "wall_time_s": (0.001, 7 * DAY_S, False),
    "phase_wall_time_s": (0.001, 7 * DAY_S, False),
    "max_output_bytes": (1024, 16 * 1024 * 1024, True),
    "check_output_limit_bytes": (1024, 1024 * 1024 * 1024, True),
    "doctor_calls_per_phase": (0, 100, True),
    "doctor_calls_per_run": (0, 1000, True),
    "usd_budget": (0.0, 1_000_000.0, False),
    "phase_token_budget": (1, 1_000_000_000, True),
    "phase_usd_budget": (0.0, 1_000_000.0, False),
}
NULLABLE_LIMITS = {"phase_wall_time_s", "usd_budget", "phase_token_budget", "phase_usd_budget"}
PHASE_TIMEOUT_BOUNDS = (0.001, 7 * DAY_S)
MAX_PHASES = 10_000
MAX_LIST_ITEMS = 1_000  # scope, checks, constraints, non_goals, acceptance
MAX_TEXT_BYTES = 64 * 1024  # goal, each check, each list item
MAX_SCOPE_PATTERN = 4096


def _meta(field: str) -> msgspec.Meta:
    low, high, _ = LIMIT_BOUNDS[field]
    return msgspec.Meta(ge=low, le=high)  # NaN fails both: refused


class Limits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=False):
    """Per-run limits. Every field has a default; bounds in ``LIMIT_BOUNDS``."""

    max_attempts: Annotated[int, _meta("max_attempts")] = 3  # per phase
    token_budget: Annotated[int, _meta("token_budget")] = 400_000  # per run
    wall_time_s: Annotated[float, _meta("wall_time_s")] = 7200  # per run
    phase_wall_time_s: Annotated[float, _meta("phase_wall_time_s")] | None = None  # per phase
    # per check, captured output kept (head and tail)
    max_output_bytes: Annotated[int, _meta("max_output_bytes")] = 1_000_000
    # a check printing more is stopped
    check_output_limit_bytes: Annotated[int, _meta("check_output_limit_bytes")] = 64 * 1024 * 1024
    doctor_calls_per_phase: Annotated[int, _meta("doctor_calls_per_phase")] = 2
    doctor_calls_per_run: Annotated[int, _meta("doctor_calls_per_run")] = 6
    # optional, priced with the config's price table
    usd_budget: Annotated[float, _meta("usd_budget")] | None = None
    # per phase (all its attempts and Doctor calls)
    phase_token_budget: Annotated[int, _meta("phase_token_budget")] | None = None
    # per phase, priced like usd_budget
    phase_usd_budget: Annotated[float, _meta("phase_usd_budget")] | None = None


class PhaseSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One phase of a run."""

    id: str
    goal: str
    kind: PhaseKind = "build"
    scope: list[str] = []
    checks: list[str] = []
    timeout_s: Annotated[float, msgspec.Meta(ge=PHASE_TIMEOUT_BOUNDS[0],
                                             le=PHASE_TIMEOUT_BOUNDS[1])] = 900
    # a check whose runner reports zero tests ran fails the phase (no_tests_collected)
    # unless this is true (e.g. a lint-only phase that calls pytest --collect-only)
    allow_no_tests: bool = False


class RunSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A run: intention, phases, limits."""

    goal: str
    phases: Annotated[list[PhaseSpec], msgspec.Meta(max_length=MAX_PHASES)]
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


def _check_text(value: Any, path: str, problems: list[tuple[str, str]]) -> None:
    if not isinstance(value, str):
        problems.append((path, f"must be a string, got {type(value).__name__}"))
    elif not value.strip():
        problems.append((path, "must not be empty"))
    elif len(value) > MAX_TEXT_BYTES // 4 and len(value.encode("utf-8", "replace")) > MAX_TEXT_BYTES:
        problems.append((path, f"longer than {MAX_TEXT_BYTES} bytes"))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _check_number(value: Any, path: str, problems: list[tuple[str, str]], *, integer: bool,
                  low: float, high: float, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a number"
        problems.append((path, f"must be {kind}, got {type(value).__name__}"))
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append((path, f"must be a finite number, got {value!r}"))
    elif not low <= value <= high:
        problems.append((path, f"must be within [{_num(low)}, {_num(high)}], got {value!r}"))


def _validate_limits(raw: Any, problems: list[tuple[str, str]]) -> None:
    if not isinstance(raw, dict):
        problems.append(("limits", "must be a table"))
        return
    for key in sorted(set(raw) - _LIMIT_KEYS):
        problems.append((f"limits.{key}", _unknown(key, _LIMIT_KEYS)))
    for key, (low, high, integer) in LIMIT_BOUNDS.items():
        if key in raw:
            _check_number(raw[key], f"limits.{key}", problems, integer=integer, low=low,
                          high=high, allow_none=key in NULLABLE_LIMITS)


def scope_pattern_problem(glob: str) -> str | None:
    """Why ``glob`` is not a valid scope pattern (relative, no ``..``, a valid glob), or None.

    The glob syntax is the drift check's (``autopack.actors._drift``): ``*``, ``?``,
    ``**`` and ``[...]`` sets, whose ranges must be in order."""
    pattern = glob.strip()
    if not pattern:
        return "must not be empty"
    if len(pattern.encode("utf-8", "replace")) > MAX_SCOPE_PATTERN:
        return f"longer than {MAX_SCOPE_PATTERN} bytes"
    if "\x00" in pattern:
        return "must not contain NUL"
    if pattern.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", pattern):
        return f"must be relative to the repository, got {glob!r}"
    if ".." in re.split(r"[/\\]", pattern):
        return f"must not contain '..', got {glob!r}"
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            close = pattern.find("]", i + 2)
            if close == -1:
                return f"unclosed '[' in {glob!r}"
            body = pattern[i + 1:close]
            body = "^" + body[1:] if body.startswith("!") else body
            try:
                re.compile(f"[{body.replace(chr(92), chr(92) * 2)}]")
            except re.error as exc:
                return f"invalid character set [{pattern[i + 1:close]}] in {glob!r}: {exc.msg}"
            i = close + 1
        else:
            i += 1
    return None


def _check_list(value: Any, path: str, problems: list[tuple[str, str]]) -> bool:
    """A list of at most MAX_LIST_ITEMS strings of at most MAX_TEXT_BYTES; True when it is."""
    if not isinstance(value, list):
        problems.append((path, f"must be a list of strings, got {type(value).__name__}"))
        return False
    if len(value) > MAX_LIST_ITEMS:
        problems.append((path, f"at most {MAX_LIST_ITEMS} entries, got {len(value)}"))
        return False
    ok = True
    for i, item in enumerate(value):
        if not isinstance(item, str):
            problems.append((f"{path}[{i}]", f"must be a string, got {type(item).__name__}"))
            ok = False
        elif len(item) > MAX_TEXT_BYTES // 4 and len(item.encode("utf-8", "replace")) > MAX_TEXT_BYTES:
            problems.append((f"{path}[{i}]", f"longer than {MAX_TEXT_BYTES} bytes"))
            ok = False
    return ok


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
    if "checks" in raw:
        _check_list(raw["checks"], f"{path}.checks", problems)
    if "scope" in raw and _check_list(raw["scope"], f"{path}.scope", problems):
        for i, glob in enumerate(raw["scope"]):
            why = scope_pattern_problem(glob)
            if why is not None:
                problems.append((f"{path}.scope[{i}]", why))
    if "timeout_s" in raw:
        low, high = PHASE_TIMEOUT_BOUNDS
        _check_number(raw["timeout_s"], f"{path}.timeout_s", problems, integer=False,
                      low=low, high=high)
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
        elif isinstance(raw.get(key), str) and len(raw[key]) > 4096:
            problems.append((key, "longer than 4096 characters"))
    workdir = raw.get("workdir")
    if isinstance(workdir, str) and (workdir.startswith("/") or ".." in workdir.split("/")):
        problems.append(("workdir", f"must be a relative path inside the repository, got {workdir!r}"))
    network = raw.get("network")
    if network is not None and network not in NETWORK_POLICIES:
        problems.append(("network", f"must be one of {', '.join(NETWORK_POLICIES)}, got {network!r}"))
    for key in ("constraints", "non_goals", "acceptance"):
        if key in raw:
            _check_list(raw[key], key, problems)
    if raw.get("setup") is not None:
        _check_list(raw["setup"], "setup", problems)
    if "limits" in raw:
        _validate_limits(raw["limits"], problems)
    phases = raw.get("phases")
    if phases is None:
        problems.append(("phases", "required: at least one [[phases]] entry"))
    elif not isinstance(phases, list):
        problems.append(("phases", "must be a list of tables"))
    elif not phases:
        problems.append(("phases", "must contain at least one phase"))
    elif len(phases) > MAX_PHASES:
        problems.append(("phases", f"at most {MAX_PHASES} phases, got {len(phases)}"))
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
