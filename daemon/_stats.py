"""Figures of the run history: ``autopackctl stats`` and the ``/metrics`` snapshot.

Pure SQL on a ``sqlite3.Connection`` (no trio): the store runs these on its
own thread, ``await store.call(compute_stats, since_ts=..., by_arm=...)``.
Works with or without ``row_factory = sqlite3.Row`` (rows are read by position).

Where each figure comes from:

* **runs** — the ``runs`` table; ``since_ts`` keeps runs with ``created_at >= since_ts``
  and every other figure is restricted to those runs.
* **success rate** — succeeded / ended, where ended = succeeded + failed + cancelled.
* **failures** — one ``classified`` event per failed attempt (the run actor writes it in
  both arms; in the baseline arm, where the classifier is off, with ``pattern`` null).
  *classified* = pattern not null, *unclassified* = pattern null; *to Doctor* = number of
  ``doctor_called`` events. **detection rate** = classified / failures.
* **tokens spent** — sums over ``llm_calls``; **tokens avoided** — sum of
  ``doctor_avoided.tokens_avoided``: a Doctor call that a mitigation or hint made
  unnecessary, credited only when the phase then passed without the Doctor.
* **cost** — sums of ``llm_calls.cost_pusd`` (each call priced when it was made, every
  token kind at its own price: a cache read costs a tenth of an input token), in USD,
  in total, by role and per ended run; calls recorded before prices were kept count 0
  and are counted in ``unpriced_calls``. **cache hit rate** — cache reads / (input +
  cache writes + cache reads): the share of prompt tokens served from the cache.
* **per-run means** (attempts, Doctor calls, tokens) — over *ended* runs only, so
  runs still in flight do not drag the means down; attempts and Doctor calls are
  the ``phases.attempts`` / ``phases.doctor_calls`` counters.
* **mean time per phase** — over phases in a terminal state with both
  ``started_at`` and ``ended_at`` (a phase skipped before it started has no duration).

Every rate or mean is ``None`` when its denominator is zero.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autopack.actors._states import (
    TERMINAL_PHASE_STATES,
    TERMINAL_RUN_STATES,
    PhaseState,
    RunState,
)

if TYPE_CHECKING:  # prometheus_client costs ~50 ms to import: not on autopackctl's path
    from ._metrics import MetricsSnapshot

LOGGER = logging.getLogger(__name__)

ARMS = ("hardened", "baseline")
RUN_STATES = tuple(s.value for s in RunState)
TOKEN_KINDS = ("input", "output", "cache_creation", "cache_read")  # same as _metrics.TOKEN_KINDS
ENDED_RUN_STATES = tuple(s.value for s in RunState if s in TERMINAL_RUN_STATES)
ENDED_PHASE_STATES = tuple(s.value for s in PhaseState if s in TERMINAL_PHASE_STATES)
PUSD_PER_USD = 10**12  # llm_calls.cost_pusd is in picodollars (autopack.actors._budget)
UNCLASSIFIED = "none"
"""Label of failures without a pattern in ``failures_by_pattern``."""

_ENDED_RUNS_SQL = "(" + ",".join(f"'{s}'" for s in ENDED_RUN_STATES) + ")"
_ENDED_PHASES_SQL = "(" + ",".join(f"'{s}'" for s in ENDED_PHASE_STATES) + ")"
_TOKEN_SUM = "l.input_tokens + l.output_tokens + l.cache_creation + l.cache_read"


# ---------------------------------------------------------------- durations
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with a unit ``s m h d w``, e.g. ``90s``, ``30m``,
    ``24h``, ``7d``, ``1w``, ``1.5h`` or ``1h30m``. Case and surrounding spaces are ignored.

    Raises ``ValueError`` with a message fit for the user when ``text`` is not such
    a duration or is zero.
    """
    s = text.strip().lower()
    if not _DURATION_RE.fullmatch(s):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit "
                         "(s, m, h, d or w), e.g. 90s, 30m, 24h, 7d, 1w")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART_RE.findall(s))
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be longer than zero")
    return seconds


# ---------------------------------------------------------------- stats
@dataclass
class _Raw:
    """Sums of one group (an arm, or everything) before the rates and means are derived."""

    by_state: dict[str, int] = field(default_factory=dict)
    attempts_ended: int = 0
    doctor_calls_ended: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KINDS, 0))
    tokens_by_role: dict[str, int] = field(default_factory=dict)
    tokens_ended: int = 0
    pusd: int = 0
    pusd_by_role: dict[str, int] = field(default_factory=dict)
    pusd_ended: int = 0
    unpriced_calls: int = 0
    failures_by_pattern: dict[str, int] = field(default_factory=dict)
    tokens_avoided: int = 0
    to_doctor: int = 0
    phase_n: int = 0
    phase_s: float = 0.0
    phase_by_kind: dict[str, tuple[int, float]] = field(default_factory=dict)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _derive(raw: _Raw) -> dict[str, Any]:
    runs_total = sum(raw.by_state.values())
    ended = sum(raw.by_state.get(s, 0) for s in ENDED_RUN_STATES)
    failures = sum(raw.failures_by_pattern.values())
    unclassified = raw.failures_by_pattern.get(UNCLASSIFIED, 0)
    classified = failures - unclassified
    tokens = {**raw.tokens, "total": sum(raw.tokens.values())}
    by_state = {s: raw.by_state.get(s, 0) for s in RUN_STATES}
    by_state.update({s: n for s, n in sorted(raw.by_state.items()) if s not in by_state})
    return {
        "runs_total": runs_total,
        "runs_by_state": by_state,
        "runs_ended": ended,
        "success_rate": _ratio(raw.by_state.get("succeeded", 0), ended),
        "failures_total": failures,
        "failures_classified": classified,
        "failures_unclassified": unclassified,
        "failures_to_doctor": raw.to_doctor,
        "detection_rate": _ratio(classified, failures),
        "failures_by_pattern": dict(sorted(raw.failures_by_pattern.items(),
                                           key=lambda kv: (-kv[1], kv[0]))),
        "tokens_spent": tokens,
        "tokens_by_role": dict(sorted(raw.tokens_by_role.items())),
        "tokens_avoided": raw.tokens_avoided,
        "tokens_per_run": _ratio(raw.tokens_ended, ended),
        "cost_usd": raw.pusd / PUSD_PER_USD,
        "cost_usd_by_role": {r: v / PUSD_PER_USD for r, v in sorted(raw.pusd_by_role.items())},
        "cost_usd_per_run": _ratio(raw.pusd_ended / PUSD_PER_USD, ended),
        "unpriced_calls": raw.unpriced_calls,
        "cache_hit_rate": _ratio(raw.tokens["cache_read"], raw.tokens["input"]
                                 + raw.tokens["cache_creation"] + raw.tokens["cache_read"]),
        "attempts_per_run": _ratio(raw.attempts_ended, ended),
        "doctor_calls_per_run": _ratio(raw.doctor_calls_ended, ended),
        "mean_phase_s": _ratio(raw.phase_s, raw.phase_n),
        "mean_phase_s_by_kind": {k: s / n for k, (n, s) in sorted(raw.phase_by_kind.items())},
    }


def _rows(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Iterable[tuple[Any, ...]]:
    return (tuple(r) for r in conn.execute(sql, args).fetchall())


def _collect(conn: sqlite3.Connection, key: str, since_ts: float | None) -> dict[str, _Raw]:
    """One aggregate query per source, grouped by ``key`` (an SQL expression over ``r``)."""
    cond, args = ("r.created_at >= ?", (since_ts,)) if since_ts is not None else ("1", ())
    groups: dict[str, _Raw] = {}

    def raw(g: Any) -> _Raw:
        return groups.setdefault(str(g), _Raw())

    for g, state, n in _rows(conn, f"SELECT {key}, r.state, COUNT(*) FROM runs r WHERE {cond}"
                                   " GROUP BY 1, 2", args):
        raw(g).by_state[state] = int(n)
    for g, attempts, doctor in _rows(
            conn, f"SELECT {key}, SUM(p.attempts), SUM(p.doctor_calls) FROM phases p"
                  f" JOIN runs r ON r.id = p.run_id WHERE {cond} AND r.state IN {_ENDED_RUNS_SQL}"
                  " GROUP BY 1", args):
        raw(g).attempts_ended, raw(g).doctor_calls_ended = int(attempts or 0), int(doctor or 0)
    for g, kind, n, secs in _rows(
            conn, f"SELECT {key}, p.kind, COUNT(*), SUM(p.ended_at - p.started_at) FROM phases p"
                  f" JOIN runs r ON r.id = p.run_id WHERE {cond}"
                  f" AND p.state IN {_ENDED_PHASES_SQL}"
                  " AND p.started_at IS NOT NULL AND p.ended_at IS NOT NULL GROUP BY 1, 2", args):
        r = raw(g)
        r.phase_n += int(n)
        r.phase_s += float(secs)
        r.phase_by_kind[str(kind)] = (int(n), float(secs))
    for g, role, t_in, t_out, t_cc, t_cr, t_ended, pusd, pusd_ended, unpriced in _rows(
            conn, f"SELECT {key}, l.role, SUM(l.input_tokens), SUM(l.output_tokens),"
                  " SUM(l.cache_creation), SUM(l.cache_read),"
                  f" SUM(CASE WHEN r.state IN {_ENDED_RUNS_SQL} THEN {_TOKEN_SUM} ELSE 0 END),"
                  " SUM(COALESCE(l.cost_pusd, 0)),"
                  f" SUM(CASE WHEN r.state IN {_ENDED_RUNS_SQL} THEN COALESCE(l.cost_pusd, 0)"
                  " ELSE 0 END), SUM(l.cost_pusd IS NULL)"
                  f" FROM llm_calls l JOIN runs r ON r.id = l.run_id WHERE {cond} GROUP BY 1, 2",
            args):
        r = raw(g)
        r.pusd += int(pusd)
        r.pusd_by_role[str(role)] = int(pusd)
        r.pusd_ended += int(pusd_ended)
        r.unpriced_calls += int(unpriced)
        for kind, value in zip(TOKEN_KINDS, (t_in, t_out, t_cc, t_cr), strict=True):
            r.tokens[kind] += int(value)
        r.tokens_by_role[str(role)] = int(t_in) + int(t_out) + int(t_cc) + int(t_cr)
        r.tokens_ended += int(t_ended)
    for g, pattern, n in _rows(
            conn, f"SELECT {key}, json_extract(e.payload, '$.pattern'), COUNT(*)"
                  " FROM events e JOIN runs r ON r.id = e.run_id"
                  f" WHERE e.kind = 'classified' AND {cond} GROUP BY 1, 2", args):
        r = raw(g)
        label = UNCLASSIFIED if pattern is None else str(pattern)
        r.failures_by_pattern[label] = r.failures_by_pattern.get(label, 0) + int(n)
    for g, avoided in _rows(
            conn, f"SELECT {key}, SUM(CAST(COALESCE(json_extract(e.payload, '$.tokens_avoided'),"
                  " 0) AS INTEGER)) FROM events e JOIN runs r ON r.id = e.run_id"
                  f" WHERE e.kind = 'doctor_avoided' AND {cond} GROUP BY 1", args):
        raw(g).tokens_avoided += int(avoided or 0)
    for g, n in _rows(conn, f"SELECT {key}, COUNT(*) FROM events e JOIN runs r ON r.id = e.run_id"
                            f" WHERE e.kind = 'doctor_called' AND {cond} GROUP BY 1", args):
        raw(g).to_doctor = int(n)
    return groups


def compute_stats(conn: sqlite3.Connection, *, since_ts: float | None,
                  by_arm: bool) -> dict[str, Any]:
    """The figures of ``autopackctl stats`` (see the module docstring for each source).

    Returns a JSON-ready dict: the figures themselves, or with ``by_arm``
    ``{"arms": {"hardened": {...}, "baseline": {...}}}`` (both arms always present,
    plus any other arm name found). Either way ``since_ts`` is echoed back.
    Runs in a handful of aggregate queries; reads only.
    """
    groups = _collect(conn, "r.arm" if by_arm else "'all'", since_ts)
    if not by_arm:
        return {"since_ts": since_ts, **_derive(groups.get("all", _Raw()))}
    names = list(ARMS) + sorted(g for g in groups if g not in ARMS)
    return {"since_ts": since_ts, "arms": {a: _derive(groups.get(a, _Raw())) for a in names}}


# ---------------------------------------------------------------- metrics
@dataclass
class MetricsCache:
    """Running totals of the append-only tables, so each scrape reads only new rows.

    ``events`` and ``llm_calls`` only grow and their ids are assigned in commit
    order, so totals up to the highest id seen stay right; each scrape adds the
    rows after it. Keep one per database for the daemon's life and pass it to
    every :func:`metrics_snapshot` call (on the store thread, one call at a time).
    Rows deleted later (pruning) stay counted: the counters stay monotonic, as
    Prometheus expects of a counter.
    """

    last_event_id: int = 0
    last_llm_id: int = 0
    failures_by_pattern: dict[str, int] = field(default_factory=dict)
    tokens_avoided: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KINDS, 0))


def _update_cache(conn: sqlite3.Connection, cache: MetricsCache) -> None:
    # the (kind, ts) index holds the rowid: the id filter is applied on index entries,
    # so only new classified events are read from the table
    (top_event,) = next(iter(_rows(conn, "SELECT COALESCE(MAX(id), 0) FROM events", ())))
    for pattern, n in _rows(
            conn, "SELECT json_extract(payload, '$.pattern'), COUNT(*)"
                  " FROM events WHERE kind = 'classified' AND id > ? AND id <= ? GROUP BY 1",
            (cache.last_event_id, top_event)):
        label = UNCLASSIFIED if pattern is None else str(pattern)
        cache.failures_by_pattern[label] = cache.failures_by_pattern.get(label, 0) + int(n)
    (avoided,) = next(iter(_rows(
        conn, "SELECT SUM(CAST(COALESCE(json_extract(payload, '$.tokens_avoided'), 0) AS INTEGER))"
              " FROM events WHERE kind = 'doctor_avoided' AND id > ? AND id <= ?",
        (cache.last_event_id, top_event))))
    cache.tokens_avoided += int(avoided or 0)
    cache.last_event_id = int(top_event)
    top_llm, *sums = next(iter(_rows(
        conn, "SELECT MAX(id), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
              " COALESCE(SUM(cache_creation), 0), COALESCE(SUM(cache_read), 0)"
              " FROM llm_calls WHERE id > ?", (cache.last_llm_id,))))
    for kind, value in zip(TOKEN_KINDS, sums, strict=True):
        cache.tokens[kind] += int(value)
    if top_llm is not None:
        cache.last_llm_id = int(top_llm)


def metrics_snapshot(conn: sqlite3.Connection, *, queue_depth: int, memory_degraded: bool,
                     actor_restarts: Mapping[str, int], control_connections_total: int,
                     control_connections_active: int, version: str = "",
                     cache: MetricsCache | None = None) -> MetricsSnapshot:
    """Everything ``/metrics`` shows, counters read from the database (all time, all arms).

    The caller passes what only the live daemon knows (queue depth, memory state,
    restarts, connections). Without ``cache`` the failure and token totals are
    summed over the whole history (about 0.15 s for 10k runs / 200k events);
    with a long-lived :class:`MetricsCache` only rows added since the previous
    call are read (a few ms). Runs by state and the phase counters are always
    read from the counters table (schema v3), whatever the history's length.
    """
    from ._metrics import MetricsSnapshot

    cache = cache if cache is not None else MetricsCache()
    _update_cache(conn, cache)
    from ._schema import counted

    totals = counted(conn)  # kept by triggers: constant time at any history length
    runs_by_state = {k[5:]: n for k, n in totals.items() if k.startswith("runs.")}
    attempts, doctor = totals.get("phase_attempts", 0), totals.get("doctor_calls", 0)
    return MetricsSnapshot(
        runs_by_state=runs_by_state,
        queue_depth=queue_depth,
        phase_attempts_total=int(attempts),
        failures_by_pattern=dict(cache.failures_by_pattern),
        doctor_calls_total=int(doctor),
        tokens_spent_total=dict(cache.tokens),
        tokens_avoided_total=cache.tokens_avoided,
        memory_degraded=1 if memory_degraded else 0,
        actor_restarts=dict(actor_restarts),
        control_connections_total=control_connections_total,
        control_connections_active=control_connections_active,
        version=version,
    )
