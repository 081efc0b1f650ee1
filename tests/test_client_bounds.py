"""Bounded resources for every client, and HTTP errors as h11 reports them (issue 13).

Was: 300 connections each holding a partial 1 MiB frame took RSS from 38 to 359 MB with
no timeout; idle connections were never closed; a reply over the frame limit was a
``FrameTooLarge`` traceback in the client; a garbage HTTP request line, or HTTP/1.1
without ``Host``, was closed without a 400.
"""

from __future__ import annotations

import json
import socket
import struct
import time

from autopack.protocol import ErrorCode, GetHealth, Hello, encode_frame

from .conftest import raw_connect, read_reply, wait_state, write_spec


def _greeted(d) -> socket.socket:
    s = raw_connect(d)
    s.sendall(encode_frame(Hello()))
    assert read_reply(s).version == 1
    return s


def test_a_partial_frame_and_an_idle_connection_are_closed_at_their_deadlines(daemon_factory):
    d = daemon_factory(config={"frame_timeout_s": 1, "idle_timeout_s": 2})
    slow = _greeted(d)
    slow.sendall(struct.pack(">I", 1000) + b"x" * 10)  # begun, never finished
    idle = _greeted(d)
    t0 = time.monotonic()
    reply = read_reply(slow)
    assert reply.code == ErrorCode.TIMEOUT
    assert "did not arrive whole" in reply.message
    assert slow.recv(1) == b""  # closed
    reply = read_reply(idle)
    assert reply.code == ErrorCode.TIMEOUT
    assert "idle" in reply.message
    assert time.monotonic() - t0 >= 1.5
    slow.close()
    idle.close()
    with d.client() as c:
        assert c.request(GetHealth()).ready
    assert "autopack_control_timeouts_total 2.0" in d.http("/metrics")[1]


def test_connection_cap(daemon_factory):
    d = daemon_factory(config={"max_connections": 3})
    held = [_greeted(d) for _ in range(3)]
    extra = raw_connect(d)
    reply = read_reply(extra)
    assert reply.code == ErrorCode.BUSY
    assert "max_connections" in reply.message
    extra.close()
    for s in held:
        s.close()
    time.sleep(0.3)
    with d.client() as c:
        assert c.request(GetHealth()).ready


def test_buffered_bytes_cap_across_connections(daemon_factory):
    d = daemon_factory(config={"max_buffered_bytes": 200_000, "frame_timeout_s": 30})
    first = _greeted(d)
    first.sendall(struct.pack(">I", 150_000) + b"x" * 149_000)
    time.sleep(0.5)
    second = _greeted(d)
    second.sendall(struct.pack(">I", 150_000) + b"x" * 149_000)
    reply = read_reply(second)
    assert reply.code == ErrorCode.BUSY
    assert "unfinished requests" in reply.message
    status, metrics = d.http("/metrics")
    assert "autopack_control_rejected_busy_total 1.0" in metrics
    assert "autopack_control_buffered_bytes 149004.0" in metrics  # the first one's, held
    first.close()
    second.close()
    time.sleep(0.3)
    assert "autopack_control_buffered_bytes 0.0" in d.http("/metrics")[1]


def test_a_reply_over_the_frame_limit_is_an_error_reply(daemon_factory, repo, tmp_path):
    d = daemon_factory(config={"max_frame_bytes": 4096})
    spec = write_spec(tmp_path / "s.json", [{"id": "a", "goal": "x", "kind": "command",
                                             "checks": ["true"]}], goal="g" * 2500)
    run_id = json.loads(d.ctl("submit", str(spec), "--repo", str(repo), "--json").stdout)["run_id"]
    wait_state(d, run_id)
    res = d.ctl("report", run_id)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "reply_too_large" in res.stderr
    assert "autopack_control_replies_too_large_total 1.0" in d.http("/metrics")[1]
    assert d.ctl("status", run_id).returncode == 0  # the connection and daemon serve on


def _http_raw(d, payload: bytes) -> bytes:
    port = int(d.health_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_http_malformed_requests_get_400(daemon):
    assert _http_raw(daemon, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400")
    no_host = _http_raw(daemon, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert no_host.startswith(b"HTTP/1.1 400"), no_host
    assert b"Host" in no_host
    # headers that never end and pass the 16 KiB bound
    huge = _http_raw(daemon, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 40_000)
    assert huge.startswith(b"HTTP/1.1 431"), huge[:100]
    assert daemon.http("/healthz")[0] == 200
