"""/metrics text: rendered from a snapshot, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import msgspec
import prometheus_client
import pytest
from autopack.daemon._metrics import METRICS_CONTENT_TYPE, MetricsSnapshot, render_metrics
from prometheus_client.parser import text_string_to_metric_families

SNAPSHOT = MetricsSnapshot(
    runs_by_state={"queued": 2, "running": 1, "succeeded": 7, "failed": 3},
    queue_depth=2,
    phase_attempts_total=41,
    failures_by_pattern={"python_missing_dep": 4, "test_failure": 9, "none": 2},
    doctor_calls_total=2,
    tokens_spent_total={"input": 120_000, "output": 30_000, "cache_creation": 5_000, "cache_read": 80_000},
    tokens_avoided_total=44_000,
    memory_degraded=1,
    actor_restarts={"memory": 2, "classifier": 0},
    actor_up={"memory": 0, "classifier": 1},
    control_connections_total=17,
    control_connections_active=1,
    version="0.1.0",
)


def parse(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sample name + sorted labels → value, for every sample in the exposition."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def types(text: bytes) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(text.decode())}


@pytest.mark.parametrize(
    ("name", "labels", "value"),
    [
        pytest.param("autopack_runs", {"state": "queued"}, 2, id="runs-queued"),
        pytest.param("autopack_runs", {"state": "succeeded"}, 7, id="runs-succeeded"),
        pytest.param("autopack_runs", {"state": "cancelled"}, 0, id="runs-missing-state-is-zero"),
        pytest.param("autopack_runs", {"state": "interrupted"}, 0, id="runs-interrupted-zero"),
        pytest.param("autopack_queue_depth", {}, 2, id="queue-depth"),
        pytest.param("autopack_phase_attempts_total", {}, 41, id="attempts"),
        pytest.param("autopack_failures_total", {"pattern": "test_failure"}, 9, id="failures-pattern"),
        pytest.param("autopack_failures_total", {"pattern": "none"}, 2, id="failures-unclassified"),
        pytest.param("autopack_doctor_calls_total", {}, 2, id="doctor-calls"),
        pytest.param("autopack_tokens_spent_total", {"kind": "input"}, 120_000, id="tokens-input"),
        pytest.param("autopack_tokens_spent_total", {"kind": "cache_read"}, 80_000, id="tokens-cache-read"),
        pytest.param("autopack_tokens_avoided_total", {}, 44_000, id="tokens-avoided"),
        pytest.param("autopack_memory_degraded", {}, 1, id="memory-degraded"),
        pytest.param("autopack_actor_restarts_total", {"actor": "memory"}, 2, id="restarts-memory"),
        pytest.param("autopack_actor_restarts_total", {"actor": "classifier"}, 0, id="restarts-zero"),
        pytest.param("autopack_actor_up", {"actor": "classifier"}, 1, id="actor-up"),
        pytest.param("autopack_actor_up", {"actor": "memory"}, 0, id="actor-restarting"),
        pytest.param("autopack_control_connections_total", {}, 17, id="connections-total"),
        pytest.param("autopack_control_connections_active", {}, 1, id="connections-active"),
        pytest.param("autopack_build_info", {"version": "0.1.0"}, 1, id="build-info"),
    ],
)
def test_values_round_trip(name: str, labels: dict[str, str], value: float) -> None:
    samples = parse(render_metrics(SNAPSHOT))
    assert samples[(name, tuple(sorted(labels.items())))] == value


def test_metric_types() -> None:
    got = types(render_metrics(SNAPSHOT))
    assert got == {
        "autopack_runs": "gauge",
        "autopack_queue_depth": "gauge",
        "autopack_phase_attempts": "counter",
        "autopack_failures": "counter",
        "autopack_doctor_calls": "counter",
        "autopack_tokens_spent": "counter",
        "autopack_tokens_avoided": "counter",
        "autopack_memory_degraded": "gauge",
        "autopack_actor_restarts": "counter",
        "autopack_actor_up": "gauge",
        "autopack_control_connections": "counter",
        "autopack_control_connections_active": "gauge",
        "autopack_part_degraded": "gauge",
        "autopack_part_down": "gauge",
        "autopack_request_errors": "counter",
        "autopack_store_write_failures": "counter",
        "autopack_run_actor_crashes": "counter",
        "autopack_control_rejected_busy": "counter",
        "autopack_control_timeouts": "counter",
        "autopack_control_buffered_bytes": "gauge",
        "autopack_control_invalid_requests": "counter",
        "autopack_control_replies_too_large": "counter",
        "autopack_build_info": "gauge",
    }


def test_empty_snapshot_still_shows_every_state_and_token_kind() -> None:
    samples = parse(render_metrics(MetricsSnapshot()))
    states = {dict(labels)["state"] for (name, labels) in samples if name == "autopack_runs"}
    kinds = {dict(labels)["kind"] for (name, labels) in samples if name == "autopack_tokens_spent_total"}
    assert states == {"queued", "running", "succeeded", "failed", "cancelled", "interrupted"}
    assert kinds == {"input", "output", "cache_creation", "cache_read"}
    assert all(value == 0 for (name, _), value in samples.items() if name != "autopack_build_info")
    assert not any(name == "autopack_failures_total" for (name, _) in samples)


def test_unknown_keys_are_kept() -> None:
    snap = MetricsSnapshot(runs_by_state={"paused": 1}, tokens_spent_total={"thinking": 5})
    samples = parse(render_metrics(snap))
    assert samples[("autopack_runs", (("state", "paused"),))] == 1
    assert samples[("autopack_tokens_spent_total", (("kind", "thinking"),))] == 5


def test_label_values_are_escaped() -> None:
    snap = MetricsSnapshot(failures_by_pattern={'odd"pattern\\with\nnewline': 1})
    samples = parse(render_metrics(snap))
    assert samples[("autopack_failures_total", (("pattern", 'odd"pattern\\with\nnewline'),))] == 1


def test_no_global_state_between_renders() -> None:
    first = parse(render_metrics(MetricsSnapshot(actor_restarts={"memory": 3})))
    second = parse(render_metrics(MetricsSnapshot(actor_restarts={"store": 1})))
    assert ("autopack_actor_restarts_total", (("actor", "memory"),)) in first
    assert ("autopack_actor_restarts_total", (("actor", "memory"),)) not in second
    default = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "autopack_" not in default


def test_snapshot_from_builtins() -> None:
    data = {"queue_depth": 3, "failures_by_pattern": {"none": 1}, "memory_degraded": 0}
    snap = msgspec.convert(data, MetricsSnapshot)
    assert parse(render_metrics(snap))[("autopack_queue_depth", ())] == 3
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"queue_depth": "many"}, MetricsSnapshot)


def test_content_type() -> None:
    assert METRICS_CONTENT_TYPE.startswith("text/plain; version=")


# ---- the renderer writes what prometheus_client's own generate_latest writes
def _reference(s: MetricsSnapshot) -> bytes:
    """The same families built with prometheus_client and rendered by ``generate_latest``."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def defaults(values: dict[str, int], keys: tuple[str, ...]) -> list[tuple[str, int]]:
        return [(k, values.get(k, 0)) for k in keys] + sorted(
            (k, v) for k, v in values.items() if k not in keys)

    def labelled(family, name, doc, label, items):  # type: ignore[no-untyped-def]
        metric = family("autopack_" + name, doc, labels=[label])
        for value_label, value in items:
            metric.add_metric([value_label], value)
        return metric

    def plain(family, name, doc, value):  # type: ignore[no-untyped-def]
        return family("autopack_" + name, doc, value=value)

    G, C = GaugeMetricFamily, CounterMetricFamily
    families = [
        labelled(G, "runs", "Runs in each state.", "state", defaults(
            s.runs_by_state, ("queued", "running", "succeeded", "failed", "cancelled",
                              "interrupted"))),
        plain(G, "queue_depth", "Runs waiting for a free slot.", s.queue_depth),
        plain(C, "phase_attempts", "Phase attempts started.", s.phase_attempts_total),
        labelled(C, "failures", "Failed attempts by classifier pattern (none = unclassified).",
                 "pattern", sorted(s.failures_by_pattern.items())),
        plain(C, "doctor_calls", "LLM Doctor calls.", s.doctor_calls_total),
        labelled(C, "tokens_spent", "Tokens spent, by kind.", "kind", defaults(
            s.tokens_spent_total, ("input", "output", "cache_creation", "cache_read"))),
        plain(C, "tokens_avoided", "Tokens saved by deterministic mitigations instead of Doctor"
              " calls.", s.tokens_avoided_total),
        plain(G, "memory_degraded", "1 while the memory actor does not answer in time.",
              s.memory_degraded),
        labelled(C, "actor_restarts", "Supervisor restarts of each child actor.", "actor",
                 sorted(s.actor_restarts.items())),
        labelled(G, "actor_up", "1 while the supervised child is up.", "actor",
                 sorted(s.actor_up.items())),
        plain(C, "control_connections", "Control-socket connections accepted.",
              s.control_connections_total),
        plain(G, "control_connections_active", "Control-socket connections open now.",
              s.control_connections_active),
        labelled(G, "part_degraded", "1 while a part is degraded.", "part",
                 sorted(s.part_degraded.items())),
        labelled(G, "part_down", "1 while a required part is down.", "part",
                 sorted(s.part_down.items())),
        labelled(C, "request_errors", "Requests answered 'internal', by request.", "request",
                 sorted(s.request_errors.items())),
        plain(C, "store_write_failures", "Database writes that failed.", s.store_write_failures),
        plain(C, "run_actor_crashes", "Run actors that crashed.", s.run_actor_crashes),
        plain(C, "control_rejected_busy", "Connections refused at a cap.",
              s.control_rejected_busy),
        plain(C, "control_timeouts", "Connections closed at a read deadline.", s.control_timeouts),
        plain(C, "control_invalid_requests", "Requests with a field out of bounds.",
              s.control_invalid_requests),
        plain(C, "control_replies_too_large", "Replies over the frame limit.",
              s.control_replies_too_large),
        plain(G, "control_buffered_bytes", "Bytes of unfinished request frames held.",
              s.control_buffered_bytes),
        labelled(G, "build_info", "Always 1; labelled with the daemon's version.", "version",
                 [(s.version, 1)]),
    ]

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return iter(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())  # type: ignore[arg-type]
    return generate_latest(registry)


@pytest.mark.parametrize(
    "snap",
    [
        pytest.param(SNAPSHOT, id="typical"),
        pytest.param(MetricsSnapshot(), id="empty"),
        pytest.param(MetricsSnapshot(
            runs_by_state={"succeeded": 1_234_567, "paused": 3, "failed": 999_999},
            tokens_spent_total={"input": 10**12, "thinking": 5},
            phase_attempts_total=1_000_000, tokens_avoided_total=-4,
            failures_by_pattern={'odd"pattern\\with\nnewline': 1, "ünïcode": 2},
            part_degraded={"memory": 1, "store": 0}, part_down={"memory": 0},
            request_errors={"Submit": 2}, store_write_failures=3, control_buffered_bytes=65536,
            version='1.0"x'), id="large-odd-and-escaped"),
    ],
)
def test_bytes_equal_prometheus_client_generate_latest(snap: MetricsSnapshot) -> None:
    assert render_metrics(snap) == _reference(snap)


def test_cached_label_prefixes_follow_the_snapshot() -> None:
    # a label value seen once is cached; the next snapshot's values are still its own
    assert b'autopack_failures_total{pattern="a"} 1.0' in render_metrics(
        MetricsSnapshot(failures_by_pattern={"a": 1}))
    again = render_metrics(MetricsSnapshot(failures_by_pattern={"a": 2, "b": 7}))
    assert b'autopack_failures_total{pattern="a"} 2.0' in again
    assert b'autopack_failures_total{pattern="b"} 7.0' in again
