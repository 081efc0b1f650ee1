"""Prometheus text for ``/metrics``, built from a plain snapshot.

The health server asks the store and the supervisor for their figures, puts
them in a :class:`MetricsSnapshot` and calls :func:`render_metrics`. Each call
builds a fresh ``CollectorRegistry`` holding one collector that yields metric
families from the snapshot, so there is no global registry state: two daemons
(or tests) in one process never see each other's numbers, and a counter is
exactly what the store says, not what this process happened to count.

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

from collections.abc import Iterator, Mapping

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


def _labelled(
    family: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    doc: str,
    label: str,
    items: list[tuple[str, int]],
) -> Metric:
    metric = family(PREFIX + name, doc, labels=[label])
    for value_label, value in items:
        metric.add_metric([value_label], value)
    return metric


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self._s = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._s
        yield _labelled(GaugeMetricFamily, "runs", "Runs in each state.", "state",
                        _with_defaults(s.runs_by_state, RUN_STATES))
        yield GaugeMetricFamily(PREFIX + "queue_depth", "Runs waiting for a free slot.", value=s.queue_depth)
        yield CounterMetricFamily(PREFIX + "phase_attempts", "Phase attempts started.",
                                  value=s.phase_attempts_total)
        yield _labelled(CounterMetricFamily, "failures",
                        "Failed attempts by classifier pattern (none = unclassified).", "pattern",
                        sorted(s.failures_by_pattern.items()))
        yield CounterMetricFamily(PREFIX + "doctor_calls", "LLM Doctor calls.", value=s.doctor_calls_total)
        yield _labelled(CounterMetricFamily, "tokens_spent", "Tokens spent, by kind.", "kind",
                        _with_defaults(s.tokens_spent_total, TOKEN_KINDS))
        yield CounterMetricFamily(PREFIX + "tokens_avoided",
                                  "Tokens saved by deterministic mitigations instead of Doctor calls.",
                                  value=s.tokens_avoided_total)
        yield GaugeMetricFamily(PREFIX + "memory_degraded",
                                "1 while the memory actor does not answer in time.", value=s.memory_degraded)
        yield _labelled(CounterMetricFamily, "actor_restarts", "Supervisor restarts of each child actor.",
                        "actor", sorted(s.actor_restarts.items()))
        yield CounterMetricFamily(PREFIX + "control_connections", "Control-socket connections accepted.",
                                  value=s.control_connections_total)
        yield GaugeMetricFamily(PREFIX + "control_connections_active", "Control-socket connections open now.",
                                value=s.control_connections_active)
        yield from self._robustness()
        yield _labelled(GaugeMetricFamily, "build_info", "Always 1; labelled with the daemon's version.",
                        "version", [(s.version, 1)])


    def _robustness(self) -> Iterator[Metric]:
        s = self._s
        yield _labelled(GaugeMetricFamily, "part_degraded", "1 while a part is degraded.", "part",
                        sorted(s.part_degraded.items()))
        yield _labelled(GaugeMetricFamily, "part_down", "1 while a required part is down.", "part",
                        sorted(s.part_down.items()))
        yield _labelled(CounterMetricFamily, "request_errors",
                        "Requests answered 'internal', by request.", "request",
                        sorted(s.request_errors.items()))
        for name, doc, value in (
            ("store_write_failures", "Database writes that failed.", s.store_write_failures),
            ("run_actor_crashes", "Run actors that crashed.", s.run_actor_crashes),
            ("control_rejected_busy", "Connections refused at a cap.", s.control_rejected_busy),
            ("control_timeouts", "Connections closed at a read deadline.", s.control_timeouts),
            ("control_invalid_requests", "Requests with a field out of bounds.",
             s.control_invalid_requests),
            ("control_replies_too_large", "Replies over the frame limit.",
             s.control_replies_too_large),
        ):
            yield CounterMetricFamily(PREFIX + name, doc, value=value)
        yield GaugeMetricFamily(PREFIX + "control_buffered_bytes",
                                "Bytes of unfinished request frames held.",
                                value=s.control_buffered_bytes)


def render_metrics(snapshot: MetricsSnapshot) -> bytes:
    """The Prometheus text exposition of ``snapshot`` (serve it with :data:`METRICS_CONTENT_TYPE`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)
