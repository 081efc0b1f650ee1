"""The dashboard over real HTTP on a real daemon: security headers, the token, read-only,
404s, filters and paging, reports, live streams (bounded, never blocking /healthz), and the
Builder's diff recorded per attempt."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_repo, wait_state, write_spec

TOKEN = "dash-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def port_of(d: Any) -> int:
    return int(d.health_url.rsplit(":", 1)[1])


def request(d: Any, path: str, *, method: str = "GET", headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port_of(d), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def submit(d: Any, spec: Path, repo: Path) -> str:
    res = d.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["run_id"])


def quick_spec(tmp_path: Path, name: str, check: str, goal: str) -> Path:
    return write_spec(tmp_path / f"{name}.json", [
        {"id": name, "goal": goal, "kind": "command", "checks": [check]}], goal=goal)


@pytest.fixture
def runs(daemon_factory, tmp_path: Path) -> tuple[Any, dict[str, str]]:
    d = daemon_factory()
    repo = make_repo(tmp_path / "repo")
    ids = {
        "ok": submit(d, quick_spec(tmp_path, "ok", "true", "Everything passes"), repo),
        "bad": submit(d, quick_spec(tmp_path, "bad", "echo boom >&2; exit 3",
                                    "A check that fails <b>loudly</b>"), repo),
    }
    for rid in ids.values():
        wait_state(d, rid)
    return d, ids


def test_security_headers_on_every_response(runs):
    d, ids = runs
    for path in ("/", "/overview", f"/runs/{ids['bad']}", "/static/dashboard.js",
                 "/static/dashboard.css", "/healthz", "/metrics", "/nowhere"):
        status, headers, _ = request(d, path)
        csp = headers.get("content-security-policy", "")
        assert "default-src 'none'" in csp, path
        assert "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
    _, _, page = request(d, f"/runs/{ids['bad']}")
    html = page.decode()
    assert "<script>" not in html
    assert "<style" not in html
    assert " style=" not in html
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/dashboard.js" defer>']
    assert "&lt;b&gt;loudly&lt;/b&gt;" in html  # what a run wrote is escaped
    assert "http://" not in html.replace(d.health_url, "")
    assert "https://" not in html


def test_unknown_ids_and_paths_are_404(runs):
    d, _ = runs
    for path in ("/runs/20990101-000000-deadbeef", "/runs/20990101-000000-deadbeef/events",
                 "/runs/20990101-000000-deadbeef/report.md", "/runs/nope/report.json",
                 "/runs/..%2f..%2fetc", "/static/missing.js", "/runs/"):
        status, _, _ = request(d, path)
        assert status == 404, path


def test_read_only_no_method_changes_anything(runs):
    d, ids = runs
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", f"/runs/{ids['ok']}", f"/runs/{ids['ok']}/cancel", "/events"):
            status, headers, _ = request(d, path, method=method, body=b"x=1")
            assert status in (404, 405), (method, path, status)
    status, headers, body = request(d, "/events", method="HEAD")  # no stream opened
    assert status == 200
    assert body == b""
    status, headers, _ = request(d, "/", method="DELETE")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    with d.client() as c:
        from autopack.protocol import GetStatus

        assert c.request(GetStatus(run_id=ids["ok"])).state == "succeeded"


def test_list_filters_search_and_paging(runs, tmp_path):
    d, ids = runs
    repo2 = make_repo(tmp_path / "second")
    more = [submit(d, quick_spec(tmp_path, f"m{i}", "true", f"Batch run {i}"), repo2)
            for i in range(5)]
    for rid in more:
        wait_state(d, rid)
    _, _, body = request(d, "/?state=failed")
    html = body.decode()
    assert ids["bad"] in html
    assert ids["ok"] not in html
    assert "1 run match" in html
    _, _, body = request(d, "/?" + urllib.parse.urlencode({"repo": str(repo2)}))
    assert all(r in body.decode() for r in more)
    assert ids["ok"] not in body.decode()
    _, _, body = request(d, "/?q=Batch+run+3")
    assert more[3] in body.decode()
    assert more[2] not in body.decode()
    _, _, body = request(d, "/?q=" + ids["ok"][-8:])
    assert ids["ok"] in body.decode()
    assert ids["bad"] not in body.decode()
    seen: list[str] = []
    path = "/?limit=3"
    while path:
        _, _, body = request(d, path)
        html = body.decode()
        seen += re.findall(r'<tr id="run-([^"]+)"', html)
        nxt = re.search(r'<a rel="next" href="([^"]+)"', html)
        path = nxt.group(1).replace("&amp;", "&") if nxt else ""
    assert seen == [*reversed(more), ids["bad"], ids["ok"]]
    assert request(d, "/?state=exploded")[0] == 400
    assert request(d, "/?before=abc")[0] == 400


def test_reports_and_detail_explain_the_failure(runs):
    d, ids = runs
    status, headers, body = request(d, f"/runs/{ids['bad']}/report.json")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["state"] == "failed"
    status, headers, body = request(d, f"/runs/{ids['bad']}/report.md")
    assert status == 200
    assert body.startswith(f"# autopack run {ids['bad']}: failed".encode())
    _, _, body = request(d, f"/runs/{ids['bad']}")
    html = body.decode()
    assert "boom" in html
    assert "exit 3" in html
    assert "<details" in html
    assert f'href="/runs/{ids["bad"]}/report.md"' in html


def test_token_required_when_asked(daemon_factory, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    d = daemon_factory(config={"dashboard_auth": "token", "dashboard_token_file": str(token_file)})
    assert request(d, "/")[0] == 401
    assert request(d, "/", headers={"Authorization": "Bearer nope"})[0] == 401
    assert request(d, f"/?token={TOKEN}")[0] == 401  # never from the query string
    assert request(d, "/", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert request(d, "/events", headers={"Authorization": "Bearer nope"})[0] == 401
    assert request(d, "/healthz")[0] == 200  # probes need no token
    assert request(d, "/static/dashboard.css")[0] == 200  # the login page is styled
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = request(d, "/login", method="POST", headers=form, body=b"token=wrong")
    assert status == 401
    assert b"not the right one" in body
    status, headers, _ = request(d, "/login", method="POST", headers=form,
                                 body=urllib.parse.urlencode({"token": TOKEN}).encode())
    assert status == 303
    assert headers["location"] == "/"
    cookie = headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in headers["set-cookie"]
    assert "SameSite=Strict" in headers["set-cookie"]
    assert TOKEN not in cookie
    assert request(d, "/overview", headers={"Cookie": cookie})[0] == 200
    assert request(d, "/overview", headers={"Cookie": cookie[:-2] + "00"})[0] == 401
    assert TOKEN not in d.log.read_text()


def test_token_required_but_missing_refuses_every_page(daemon_factory):
    d = daemon_factory(config={"dashboard_auth": "token"})
    status, _, body = request(d, "/")
    assert status == 503
    assert b"no dashboard token" in body
    assert request(d, "/", headers={"Authorization": "Bearer anything-at-all-123456"})[0] == 503
    assert request(d, "/healthz")[0] == 200


def read_stream_until(sock: socket.socket, needle: bytes, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not seen in {data[-500:]!r}")
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def open_stream(d: Any, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port_of(d)), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    return sock


def test_live_streams_push_rows_and_never_block_health(daemon_factory, tmp_path):
    d = daemon_factory(config={"dashboard_max_streams": 2})
    repo = make_repo(tmp_path / "repo")
    first = open_stream(d, "/events?since=0")
    second = open_stream(d, "/events?state=failed&since=0")
    try:
        head = read_stream_until(first, b"retry:", 10)
        assert b"200 OK" in head
        assert b"text/event-stream" in head
        assert b"default-src 'none'" in head
        read_stream_until(second, b"retry:", 10)
        status, headers, _ = request(d, "/events")
        assert status == 503
        assert headers["retry-after"]
        t0 = time.monotonic()
        assert request(d, "/healthz")[0] == 200  # two open streams do not block the listener
        assert time.monotonic() - t0 < 5
        rid = submit(d, quick_spec(tmp_path, "ok", "true", "streamed"), repo)
        data = read_stream_until(first, f'"id":"{rid}"'.encode(), 20)
        assert b"event: row" in data
        wait_state(d, rid)
        read_stream_until(first, b"s-succeeded", 20)
        bad = submit(d, quick_spec(tmp_path, "bad", "false", "streamed failure"), repo)
        wait_state(d, bad)
        got = read_stream_until(second, f'"id":"{bad}"'.encode(), 20)
        assert f'event: row\ndata: {{"id":"{rid}"'.encode() not in got  # filtered out
    finally:
        first.close()
        second.close()
    deadline = time.monotonic() + 5
    while True:  # the slots are given back as soon as the clients leave
        probe = open_stream(d, "/events")
        head = read_stream_until(probe, b"\r\n", 5)
        probe.close()
        if b" 200 " in head:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    detail = open_stream(d, f"/runs/{bad}/events?since=0")
    try:
        read_stream_until(detail, b"event: detail", 10)
    finally:
        detail.close()


def test_logs_follow_still_works_through_the_shared_stream(runs):
    d, ids = runs
    res = d.ctl("logs", "-f", ids["bad"], timeout=30)
    assert res.returncode == 1
    assert "run_failed" in res.stdout
    assert "submitted" in res.stdout


@pytest.mark.slow
def test_wheel_ships_the_static_assets(tmp_path):
    """A non-editable install gets the CSS, JS and icon (package data)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("autopack-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("dashboard.css", "dashboard.js", "favicon.svg"):
        assert f"autopack/daemon/web/static/{asset}" in names
    assert "autopack/daemon/web/_server.py" in names


def test_malformed_body_to_a_dashboard_path_is_a_400_and_the_daemon_serves_on(daemon_factory):
    d = daemon_factory()
    sock = socket.create_connection(("127.0.0.1", port_of(d)), timeout=10)
    try:
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"zz-not-hex\r\n\r\n")
        assert read_stream_until(sock, b"\r\n", 10).startswith(b"HTTP/1.1 400")
    finally:
        sock.close()
    assert request(d, "/healthz")[0] == 200
    assert request(d, "/")[0] == 200
