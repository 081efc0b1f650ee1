"""Property-based fuzzer of the control protocol, against a real daemon (issue 13).

Hypothesis generates *valid* request types (every message the client may send)
with extreme field values: integers at and beyond the 64-bit edges, NaN and
infinities, empty, huge, control-character and path-traversal strings, run ids
that exist and ones that do not. Each example is a batch of requests on one
connection. The properties:

* every request gets an answer, and it is never ``internal`` (a bug) — an
  ``Error`` with any other code is a fine answer to a hostile request;
* after each batch the daemon still serves: a fresh connection answers
  ``health`` and the process is alive.

Used by ``tests/test_fuzz.py`` (bounded: a fixed number of derandomized
examples) and ``bench/robust.py`` (prints how many cases ran). Submitted runs
only ever run the harmless checks in ``SAFE_CHECKS``.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgspec
from autopack.daemon.ctl._client import Client
from autopack.protocol import (
    Cancel,
    Error,
    ErrorCode,
    Follow,
    GetContext,
    GetHealth,
    GetLessons,
    GetReport,
    GetStats,
    GetStatus,
    Limits,
    ListRuns,
    LogsEnd,
    NormalizePlan,
    PhaseSpec,
    RunSpec,
    Submit,
    decode_reply,
    encode_frame,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SAFE_CHECKS = ["true", "false", "exit 3", "echo fuzz"]
EDGE_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]
EDGE_FLOATS = [0.0, -0.0, 1e-300, -1.0, 1e308, math.inf, -math.inf, math.nan, 5e-324]


def ints() -> st.SearchStrategy[int]:
    return st.sampled_from(EDGE_INTS) | st.integers(-(2**63), 2**64 - 1)


def floats() -> st.SearchStrategy[float]:
    return st.sampled_from(EDGE_FLOATS) | st.floats(allow_nan=True, allow_infinity=True)


def texts(known: list[str]) -> st.SearchStrategy[str]:
    nasty = st.sampled_from(["", " ", "\x00", "../../etc/passwd", "/", "*", "%s%n", "'; DROP TABLE runs;--",
                             '"', "NEAR(", "a" * 5000, "\u202e", "\ud7ff", "latest", "-1"])
    return st.sampled_from(known) | nasty | st.text(max_size=64)


def specs(repo: str) -> st.SearchStrategy[RunSpec]:
    limits = st.builds(
        Limits, max_attempts=ints(), token_budget=ints(), wall_time_s=floats(),
        phase_wall_time_s=st.none() | floats(), max_output_bytes=ints(),
        check_output_limit_bytes=ints(), doctor_calls_per_phase=ints(),
        doctor_calls_per_run=ints(), usd_budget=st.none() | floats())
    phase = st.builds(
        PhaseSpec, id=st.sampled_from(["a", "b", "Bad Id", "", "x" * 300]),
        goal=texts(["do it"]), kind=st.just("command"),
        scope=st.lists(texts(["src/**", "[z-a]", "../**", "/etc/**"]), max_size=3),
        checks=st.lists(st.sampled_from(SAFE_CHECKS), min_size=1, max_size=2),
        timeout_s=floats())
    return st.builds(RunSpec, goal=texts(["fuzz"]), phases=st.lists(phase, min_size=0, max_size=3),
                     repo=st.sampled_from([None, repo, "relative/path", "/nonexistent"]),
                     base=texts(["HEAD"]), limits=limits)


def requests(repo: str, run_ids: list[str]) -> st.SearchStrategy[Any]:
    rid = texts(run_ids)
    return st.one_of(
        st.builds(GetStatus, run_id=rid),
        st.builds(GetReport, run_id=rid),
        st.builds(Cancel, run_id=rid),
        st.builds(Follow, run_id=rid, follow=st.just(False), after=ints(), limit=ints()),
        st.builds(ListRuns, state=st.none() | texts(["queued", "failed"]), limit=ints(),
                  before=st.none() | ints(),
                  states=st.lists(texts(["running", "succeeded"]), max_size=20)),
        st.builds(GetHealth),
        st.builds(GetContext, run_id=rid, phase=st.none() | texts(["a"]),
                  role=texts(["builder", "doctor"])),
        st.builds(GetLessons, repo=st.none() | texts([repo]), search=st.none() | texts(["error"]),
                  limit=ints()),
        st.builds(GetStats, since_s=st.none() | floats(), by_arm=st.booleans()),
        st.builds(NormalizePlan, plan=texts(["# Plan\n1. do a thing\n"]),
                  repo=st.none() | st.sampled_from([repo, "/nonexistent"]), llm=st.just(False)),
        st.builds(Submit, spec=specs(repo), repo=st.none() | st.sampled_from([repo, "/x"]),
                  arm=st.none() | st.sampled_from(["hardened", "baseline"])),
    )


class Probe:
    """Sends batches to the daemon on ``socket_path``; counts the cases that ran."""

    def __init__(self, socket_path: str, is_alive: Any) -> None:
        self.socket_path = socket_path
        self.is_alive = is_alive
        self.cases = 0
        self.codes: dict[str, int] = {}

    def exchange(self, client: Client, request: Any) -> None:
        """Send one request; read until its last reply. Raises AssertionError on ``internal``."""
        try:
            frame = encode_frame(request)
        except (OverflowError, msgspec.EncodeError):
            return  # not expressible on the wire (msgpack has no NaN-free ints beyond 64 bits)
        client.sock.sendall(frame)
        self.cases += 1
        while True:
            reply = _recv(client)
            if isinstance(reply, Error):
                self.codes[reply.code] = self.codes.get(reply.code, 0) + 1
                assert reply.code != ErrorCode.INTERNAL, (request, reply)
                return
            self.codes["ok"] = self.codes.get("ok", 0) + 1
            if not isinstance(request, Follow) or isinstance(reply, LogsEnd):
                return

    def batch(self, batch: list[Any]) -> None:
        with Client(self.socket_path, timeout=60) as client:
            for request in batch:
                self.exchange(client, request)
        # the daemon still serves, on a fresh connection
        assert self.is_alive(), "autopackd exited"
        with Client(self.socket_path, timeout=30) as client:
            assert client.request(GetHealth()).alive


def _recv(client: Client) -> Any:
    header = _read_exactly(client, 4)
    (size,) = struct.unpack(">I", header)
    return decode_reply(_read_exactly(client, size))


def _read_exactly(client: Client, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = client.sock.recv(n - len(data))
        if not chunk:
            raise AssertionError("the daemon closed the connection without an answer")
        data += chunk
    return data


def run_fuzz(probe: Probe, repo: str, run_ids: list[str], *, examples: int,
             batch_size: int = 4) -> int:
    """Run ``examples`` derandomized batches through ``probe``; returns the requests sent."""

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(requests(repo, run_ids), min_size=1, max_size=batch_size))
    def fuzz(batch: list[Any]) -> None:
        probe.batch(batch)

    fuzz()
    return probe.cases
