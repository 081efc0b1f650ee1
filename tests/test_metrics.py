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
