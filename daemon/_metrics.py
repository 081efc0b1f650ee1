"""Prometheus text for ``/metrics``, built from a plain snapshot.

The health server asks the store and the supervisor for their figures, puts
them in a :class:`MetricsSnapshot` and calls :func:`render_metrics`. There is no
registry and no global state: two daemons (or tests) in one process never see
each other's numbers, and a counter is exactly what the store says, not what
this process happened to count.

The text is written here, not by ``prometheus_client``'s ``generate_latest``:
that builds a registry, metric families and sample tuples and re-validates every
name on each scrape (~2 ms for these ~60 samples on a loaded 2-core machine, most
of a scrape). The families are fixed, so their ``# HELP``/``# TYPE`` headers are
rendered once at import, and the ``name{label="value"} `` prefix of each labelled
sample is cached; a scrape only formats the numbers (tens of µs). The output is
byte for byte what ``generate_latest`` gives for the same families (a test
compares the two), so scrapers see no difference.

Exposed metrics (all prefixed ``autopack_``; labels in braces):

==========================================  =======  =====================================================
name                                        type     meaning
==========================================  =======  =====================================================
``runs{state}``                             gauge    runs in each state (every run state, 0 included)
``queue_depth``                             gauge    runs waiting for a free slot
``phase_attempts_total``                    counter  attempts started, all runs
``failures_total{pattern}``                 counter  failed attempts by classifier pattern; ``none`` = unclassified
``doctor_calls_total``                      counter  LLM Doctor calls
``tokens_spent_total{kind}``                counter  tokens by kind: input, output, cache_creation, cache_read
``tokens_avoided_total``                    counter  tokens saved by deterministic mitigations
``memory_degraded``                         gauge    1 while the memory actor is not answering in time
``actor_restarts_total{actor}``             counter  supervisor restarts of each child since start
``actor_up{actor}``                         gauge    1 while the supervised child is up (0: restarting, stopped, failed)
``control_connections_total``               counter  control-socket connections accepted since start
``control_connections_active``              gauge    control-socket connections open now
``build_info{version}``                     gauge    always 1; the label carries the daemon's version
``part_degraded{part}``                      gauge    1 while a part is degraded (crashed recently, or its requests fail)
``part_down{part}``                          gauge    1 while a required part is down (not ready)
``request_errors_total{request}``            counter  requests answered ``internal`` (a bug), by request tag
``store_write_failures_total``               counter  database writes that failed (disk full, I/O error)
``run_actor_crashes_total``                  counter  run actors that crashed (retried, then the run fails)
``control_rejected_busy_total``              counter  connections refused: max_connections / max_buffered_bytes
``control_timeouts_total``                   counter  connections closed: frame or idle read deadline
``control_buffered_bytes``                   gauge    bytes of unfinished request frames held now
``control_invalid_requests_total``           counter  requests refused for a field out of bounds
``control_replies_too_large_total``          counter  replies replaced by a reply_too_large error
==========================================  =======  =====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
"""``Content-Type`` header for the ``/metrics`` response."""

PREFIX = "autopack_"

RUN_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
TOKEN_KINDS = ("input", "output", "cache_creation", "cache_read")


class MetricsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Every figure ``/metrics`` shows, as plain numbers. Fields default to zero/empty.

    Build it from builtins with ``msgspec.convert(data, MetricsSnapshot)``.
    """

    runs_by_state: dict[str, int] = {}
    queue_depth: int = 0
    phase_attempts_total: int = 0
    failures_by_pattern: dict[str, int] = {}  # pattern id, or "none" for unclassified
    doctor_calls_total: int = 0
    tokens_spent_total: dict[str, int] = {}  # by kind: input/output/cache_creation/cache_read
    tokens_avoided_total: int = 0
    memory_degraded: int = 0  # 0 or 1
    actor_restarts: dict[str, int] = {}  # actor name -> restarts since start
    actor_up: dict[str, int] = {}  # actor name -> 1 while up
    control_connections_total: int = 0
    control_connections_active: int = 0
    version: str = ""
    part_degraded: dict[str, int] = {}
    part_down: dict[str, int] = {}
    request_errors: dict[str, int] = {}
    store_write_failures: int = 0
    run_actor_crashes: int = 0
    control_rejected_busy: int = 0
    control_timeouts: int = 0
    control_buffered_bytes: int = 0
    control_invalid_requests: int = 0
    control_replies_too_large: int = 0


def _with_defaults(values: Mapping[str, int], keys: tuple[str, ...]) -> list[tuple[str, int]]:
    """``keys`` first (0 when missing, so dashboards see every series), then any extra, sorted."""
    extra = sorted(k for k in values if k not in keys)
    return [(k, values.get(k, 0)) for k in keys] + [(k, values[k]) for k in extra]


class _Family(NamedTuple):
    """One metric family: where its value(s) come from in the snapshot, and how it is shown."""

    field: str  # the MetricsSnapshot field: an int, or a dict label value -> int
    name: str  # without the prefix, nor ``_total`` for a counter
    kind: str  # "gauge" or "counter"
    doc: str
    label: str = ""  # the label's name when ``field`` is a dict
    defaults: tuple[str, ...] = ()  # label values always shown (0 when missing)


_FAMILIES = (
    _Family("runs_by_state", "runs", "gauge", "Runs in each state.", "state", RUN_STATES),
    _Family("queue_depth", "queue_depth", "gauge", "Runs waiting for a free slot."),
    _Family("phase_attempts_total", "phase_attempts", "counter", "Phase attempts started."),
    _Family("failures_by_pattern", "failures", "counter",
            "Failed attempts by classifier pattern (none = unclassified).", "pattern"),
    _Family("doctor_calls_total", "doctor_calls", "counter", "LLM Doctor calls."),
    _Family("tokens_spent_total", "tokens_spent", "counter", "Tokens spent, by kind.", "kind",
            TOKEN_KINDS),
    _Family("tokens_avoided_total", "tokens_avoided", "counter",
            "Tokens saved by deterministic mitigations instead of Doctor calls."),
    _Family("memory_degraded", "memory_degraded", "gauge",
            "1 while the memory actor does not answer in time."),
    _Family("actor_restarts", "actor_restarts", "counter",
            "Supervisor restarts of each child actor.", "actor"),
    _Family("actor_up", "actor_up", "gauge", "1 while the supervised child is up.", "actor"),
    _Family("control_connections_total", "control_connections", "counter",
            "Control-socket connections accepted."),
    _Family("control_connections_active", "control_connections_active", "gauge",
            "Control-socket connections open now."),
    _Family("part_degraded", "part_degraded", "gauge", "1 while a part is degraded.", "part"),
    _Family("part_down", "part_down", "gauge", "1 while a required part is down.", "part"),
    _Family("request_errors", "request_errors", "counter",
            "Requests answered 'internal', by request.", "request"),
    _Family("store_write_failures", "store_write_failures", "counter",
            "Database writes that failed."),
    _Family("run_actor_crashes", "run_actor_crashes", "counter", "Run actors that crashed."),
    _Family("control_rejected_busy", "control_rejected_busy", "counter",
            "Connections refused at a cap."),
    _Family("control_timeouts", "control_timeouts", "counter",
            "Connections closed at a read deadline."),
    _Family("control_invalid_requests", "control_invalid_requests", "counter",
            "Requests with a field out of bounds."),
    _Family("control_replies_too_large", "control_replies_too_large", "counter",
            "Replies over the frame limit."),
    _Family("control_buffered_bytes", "control_buffered_bytes", "gauge",
            "Bytes of unfinished request frames held."),
)


def _sample_name(family: _Family) -> str:
    return PREFIX + family.name + ("_total" if family.kind == "counter" else "")


def _header(family: _Family) -> str:
    name = _sample_name(family)
    doc = family.doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {family.kind}\n"


# rendered once: (family, its header, its sample name)
_RENDER = tuple((f, _header(f), _sample_name(f)) for f in _FAMILIES)
_BUILD_INFO = _Family("version", "build_info", "gauge",
                      "Always 1; labelled with the daemon's version.", "version")
_BUILD_INFO_HEADER = _header(_BUILD_INFO)

_prefixes: dict[tuple[str, str, str], str] = {}
_MAX_PREFIXES = 4096  # label values come from patterns, actors, parts: a bounded set


def _prefix(sample: str, label: str, value: str) -> str:
    """``sample{label="value"} `` with the value escaped as the text format wants, cached."""
    key = (sample, label, value)
    text = _prefixes.get(key)
    if text is None:
        if len(_prefixes) >= _MAX_PREFIXES:
            _prefixes.clear()
        escaped = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
        text = _prefixes[key] = f'{sample}{{{label}="{escaped}"}} '
    return text


def _number(value: float) -> str:
    """The value as Prometheus (Go) writes a float: ``7.0``, ``1.234567e+06``, ``+Inf``."""
    if type(value) is int and 0 <= value < 1_000_000:
        return f"{value}.0"  # the common case; what floatToGoString gives for it
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _render_family(out: list[str], family: _Family, header: str, sample: str,
                   value: Any) -> None:
    out.append(header)
    if not family.label:
        out.append(f"{sample} {_number(value)}\n")
        return
    items = _with_defaults(value, family.defaults) if family.defaults else sorted(value.items())
    for label_value, n in items:
        out.append(_prefix(sample, family.label, label_value) + _number(n) + "\n")


def render_metrics(snapshot: MetricsSnapshot) -> bytes:
    """The Prometheus text exposition of ``snapshot`` (serve it with :data:`METRICS_CONTENT_TYPE`)."""
    out: list[str] = []
    for family, header, sample in _RENDER:
        _render_family(out, family, header, sample, getattr(snapshot, family.field))
    out.append(_BUILD_INFO_HEADER)
    out.append(_prefix(PREFIX + "build_info", "version", snapshot.version) + "1.0\n")
    return "".join(out).encode()
