"""Dashboard: the read-only web UI served by the daemon's HTTP listener.

Theory of operation
-------------------
The health server hands every path that is not a health route to
:meth:`Dashboard.handle`, one task per connection. Pages are rendered on the
server from read queries run on the store thread (:mod:`._queries`), so they
show everything with JavaScript off; ``/static/dashboard.js`` only adds live
updates. Those come over Server-Sent Events (``/events`` for the list,
``/runs/<id>/events`` for a run) fed by :func:`._stream.event_stream`, the
same stream ``autopackctl logs -f`` reads: each batch of new events re-renders
the affected list rows, or the run's detail body, on the server and sends the
HTML. Streams are bounded (``dashboard_max_streams``; more get 503) and
lift the listener's 30 s per-connection deadline only for themselves.

There is no endpoint that changes anything: the only POST is ``/login``,
which sets a session cookie when a token is required (see :mod:`._auth`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from importlib import resources
from typing import Any, Protocol

import trio
from autopack.daemon._queries import count_by_state

from . import _queries as wq
from ._auth import COOKIE, Gate, TokenError, load_token
from ._exceptions import BadRequest, NotFound, WebError
from ._html import STATES, login_page, message_page
from ._http import HTML, SSE_HEARTBEAT, HttpRequest, HttpResponse, sse, text
from ._render_detail import detail_body, detail_page
from ._render_list import list_page, run_row
from ._render_overview import overview_page, summary_line
from ._stream import event_stream
from ._timeline import cost_usd

LOGGER = logging.getLogger(__name__)
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".svg": "image/svg+xml"}
PAGE_SIZE, MAX_PAGE_SIZE = 50, 200
STREAM_MAX_S = 3600.0  # a live stream ends after an hour; the browser reconnects by itself
HEARTBEAT_S = 15.0


class DaemonView(Protocol):
    """What the dashboard reads from the daemon (``_app.Daemon`` provides it)."""

    store: Any
    scheduler: Any  # .active: the runs executing now
    supervisor: Any  # .statistics(): restarts of each supervised part
    llm: Any  # .statistics(): rate limiter and circuit breaker

    @property
    def settings(self) -> Any: ...  # the current snapshot (a reload swaps it)

    async def health(self) -> Any: ...
    async def report(self, run_id: str) -> dict[str, Any]: ...


def _load_static() -> dict[str, bytes]:
    root = resources.files(__package__).joinpath("static")
    return {f"/static/{f.name}": f.read_bytes() for f in root.iterdir() if f.is_file()}


class Dashboard:
    """Serves ``/``, ``/overview``, ``/runs/<id>`` (+ ``report.md``/``report.json``), the live
    streams, ``/login`` and ``/static/*``. ``handle`` never raises for a client's mistake."""

    def __init__(self, daemon: DaemonView, *, host: str) -> None:
        self.d = daemon
        s = daemon.settings
        try:
            token = load_token(s.dashboard_token_file)
        except TokenError as exc:
            LOGGER.error("dashboard: %s; the dashboard refuses every page", exc)
            token = None
        self.gate = Gate.for_listener(host, s.dashboard_auth, token)
        if self.gate.misconfigured:
            LOGGER.error("dashboard: the listener %s needs a token (dashboard_token_file or the "
                         "dashboard_token credential); the dashboard refuses every page", host)
        self.static = _load_static()
        self.streams = 0
        self._repos: tuple[int, list[str]] = (-1, [])

    # ------------------------------------------------------------------ routing
    async def handle(self, req: HttpRequest) -> HttpResponse:
        try:
            return await self._route(req)
        except WebError as exc:
            if isinstance(exc, NotFound):
                return HttpResponse(404, HTML, message_page("Not found", str(exc)))
            return text(exc.status, str(exc))

    async def _route(self, req: HttpRequest) -> HttpResponse:
        path = req.path
        if path in self.static:
            if req.method not in ("GET", "HEAD"):
                return _not_allowed("GET, HEAD")
            ext = path[path.rfind("."):]
            return HttpResponse(200, STATIC_TYPES.get(ext, "application/octet-stream"),
                                self.static[path])
        if self.gate.misconfigured:
            return HttpResponse(503, HTML, message_page(
                "Dashboard disabled", "This listener is not on loopback and no dashboard token "
                "is configured (dashboard_token_file or the dashboard_token credential)."))
        if path == "/login":
            return self._login(req)
        if req.method not in ("GET", "HEAD"):
            return _not_allowed("GET, HEAD")
        if not self.gate.allows(req.headers.get("authorization", ""),
                                req.cookies().get(COOKIE)):
            return HttpResponse(401, HTML, login_page(),
                                headers=[("www-authenticate", 'Bearer realm="autopack"')])
        return await self._page(req, path)

    async def _page(self, req: HttpRequest, path: str) -> HttpResponse:
        if path == "/":
            return await self._list(req)
        if path == "/overview":
            return HttpResponse(200, HTML, overview_page(await self.overview()))
        if path == "/events":
            params = req.params()
            return self._open_stream(self._list_stream(self._filter(params),
                                                       self._after(req, params)), req.method)
        parts = path.split("/")
        if len(parts) >= 3 and parts[1] == "runs" and RUN_ID.fullmatch(parts[2]):
            rid, rest = parts[2], "/".join(parts[3:])
            if rest == "":
                return await self._detail(rid)
            if rest == "events":
                await self._must_exist(rid)
                return self._open_stream(
                    self._detail_stream(rid, self._after(req, req.params())), req.method)
            if rest in ("report.md", "report.json"):
                return await self._report(rid, rest)
        raise NotFound(f"nothing at {path}")

    # ------------------------------------------------------------------ pages
    def _filter(self, params: Mapping[str, str]) -> wq.ListFilter:
        state = params.get("state") or None
        if state is not None and state not in STATES:
            raise BadRequest(f"unknown state {state!r}")
        try:
            before = int(params["before"]) if params.get("before") else None
            after = int(params["after"]) if params.get("after") else None
            limit = int(params.get("limit") or PAGE_SIZE)
        except ValueError:
            raise BadRequest("before, after and limit are numbers") from None
        return wq.ListFilter(state=state, repo=params.get("repo") or None,
                             text=(params.get("q") or "").strip() or None, before=before,
                             after=after, limit=min(max(limit, 1), MAX_PAGE_SIZE))

    async def _list(self, req: HttpRequest) -> HttpResponse:
        f = self._filter(req.params())
        data, last, repos, ov = await self._read(_list_data, f, self._repos)
        self._repos = repos
        body = list_page(data, f, repos=repos[1], now=time.time(),
                         wedged_after_s=self.d.settings.wedged_after_s,
                         summary=summary_line(await self._summary(ov)), last_event=last)
        return HttpResponse(200, HTML, body)

    async def _detail(self, rid: str) -> HttpResponse:
        run, last = await self._read(_detail_data, rid)
        if run is None:
            raise NotFound(f"no run with id {rid}")
        return HttpResponse(200, HTML, detail_page(
            run, now=time.time(), wedged_after_s=self.d.settings.wedged_after_s,
            last_event=last))

    async def _report(self, rid: str, name: str) -> HttpResponse:
        from autopack.daemon._queries import UnknownRun
        from autopack.daemon._report import render_markdown

        try:
            data = await self.d.report(rid)
        except UnknownRun:
            raise NotFound(f"no run with id {rid}") from None
        if name == "report.json":
            return HttpResponse(200, "application/json",
                                json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")
        return HttpResponse(200, "text/markdown; charset=utf-8",
                            render_markdown(data).encode("utf-8"))

    def _login(self, req: HttpRequest) -> HttpResponse:
        if not self.gate.required:
            return HttpResponse(303, headers=[("location", "/")])
        if req.method in ("GET", "HEAD"):
            return HttpResponse(200, HTML, login_page())
        if req.method != "POST":
            return _not_allowed("GET, HEAD, POST")
        token = req.form().get("token", "").strip()
        if not self.gate.check_token(token):
            LOGGER.warning("dashboard: a sign-in with a wrong token was refused")
            return HttpResponse(401, HTML, login_page("That token is not the right one."))
        cookie = (f"{COOKIE}={self.gate.cookie_value()}; Path=/; HttpOnly; SameSite=Strict;"
                  " Max-Age=2592000")
        return HttpResponse(303, headers=[("location", "/"), ("set-cookie", cookie)])

    # ------------------------------------------------------------------ figures
    async def _read(self, fn: Any, *args: Any) -> Any:
        """Run a read query on the store's read connection (never behind a batch of writes)."""
        return await self.d.store.read(fn, *args)

    async def _summary(self, counts: dict[str, int]) -> dict[str, Any]:
        health = await self.d.health()
        return {"counts": counts, "running": len(self.d.scheduler.active),
                "limit": self.d.settings.max_concurrent_runs, "degraded": list(health.degraded)}

    async def overview(self) -> dict[str, Any]:
        """Everything ``/overview`` shows (see :func:`._render_overview.overview_page`)."""
        day_start = time.time() - time.time() % 86400
        counts, day, arms = await self._read(_overview_data, day_start)
        health = await self.d.health()
        parts: dict[str, dict[str, Any]] = {}
        for name, state in health.parts.items():
            parts[name] = {"state": "ok" if state == "ok" else state, "restarts": 0,
                           "last_error": None}
        for child in self.d.supervisor.statistics():
            p = parts.setdefault(child.name, {"state": child.state})
            p.update(restarts=child.restarts, last_error=child.last_error)
        llm = self.d.llm
        llm_stats = None
        if llm is not None:
            st = llm.statistics()
            llm_stats = {k: getattr(st, k) for k in (
                "breaker_state", "breaker_opens", "consecutive_failures", "backoff_remaining_s",
                "in_flight", "waiting", "requests", "rate_limited")}
        s = self.d.settings
        return {
            **await self._summary(counts), "parts": parts, "llm": llm_stats,
            "llm_limit": s.llm_max_concurrency,
            "today": {"tokens": day["tokens"], "usd": cost_usd(day["pusd"]),
                      "calls": day["calls"],
                      "token_budget": s.daily_token_budget, "usd_budget": s.daily_usd_budget},
            "arms": {name: {"runs": a["runs_total"], "ended": a["runs_ended"],
                            "succeeded": a["runs_by_state"].get("succeeded", 0),
                            "success_rate": a["success_rate"],
                            "tokens_spent": a["tokens_spent"]["total"],
                            "tokens_avoided": a["tokens_avoided"]}
                     for name, a in arms["arms"].items()},
        }

    async def _must_exist(self, rid: str) -> None:
        run, _ = await self._read(_detail_head, rid)
        if run is None:
            raise NotFound(f"no run with id {rid}")

    # ------------------------------------------------------------------ live streams
    def _open_stream(self, gen: AsyncIterator[bytes], method: str) -> HttpResponse:
        if method == "HEAD":  # the headers only: no stream is opened
            return HttpResponse(200, "text/event-stream")
        limit = self.d.settings.dashboard_max_streams
        if self.streams >= limit:
            return text(503, f"too many live streams (dashboard_max_streams = {limit})",
                        headers=[("retry-after", "10")])
        self.streams += 1

        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 2000\n\n"
                with trio.move_on_after(STREAM_MAX_S):
                    async for chunk in gen:
                        yield chunk
            finally:
                self.streams -= 1
                if isinstance(gen, AsyncGenerator):  # end it now, not at garbage collection
                    await gen.aclose()

        return HttpResponse(200, "text/event-stream", stream=body)

    @staticmethod
    def _after(req: HttpRequest, params: Mapping[str, str]) -> int | None:
        """Where a stream starts: the browser's ``Last-Event-ID`` when it reconnects, else the
        page's ``since``; ``None``: from now on."""
        raw = req.headers.get("last-event-id") or params.get("since") or ""
        if not raw:
            return None
        try:
            return int(raw)
        except ValueError:
            raise BadRequest("since / Last-Event-ID must be an event id") from None

    async def _start(self, after: int | None, rid: str | None) -> int:
        return after if after is not None else int(await self._read(wq.last_event_id, rid))

    async def _list_stream(self, f: wq.ListFilter, after: int | None) -> AsyncIterator[bytes]:
        start = await self._start(after, None)
        async for events, _ in event_stream(self.d.store, after=start, idle_s=HEARTBEAT_S):
            if not events:
                yield SSE_HEARTBEAT
                continue
            ids = list(dict.fromkeys(e["run_id"] for e in events))
            found = await self._read(wq.rows_for, ids, f)
            now, wedged = time.time(), self.d.settings.wedged_after_s
            last = events[-1]["id"]
            for row in found["rows"]:
                yield sse("row", {"id": row["id"], "seq": row["seq"], "html": run_row(
                    row, now=now, wedged_after_s=wedged)}, last)
            if f.state:  # only a state change can take a shown run out of the filter
                moved = {e["run_id"] for e in events if e["kind"].startswith("run_")}
                for rid in found["dropped"]:
                    if rid in moved:
                        yield sse("drop", {"id": rid}, last)
            await trio.sleep(0.25)  # coalesce: a busy daemon does not re-render per event

    async def _detail_stream(self, rid: str, after: int | None) -> AsyncIterator[bytes]:
        start = await self._start(after, rid)
        async for events, _ in event_stream(self.d.store, after=start, run_id=rid,
                                            idle_s=HEARTBEAT_S):
            if not events:
                yield SSE_HEARTBEAT
                continue
            run, _last = await self._read(_detail_data, rid)
            if run is None:
                return
            html = detail_body(run, now=time.time(),
                               wedged_after_s=self.d.settings.wedged_after_s)
            yield sse("detail", {"html": html, "state": run["state"]}, events[-1]["id"])
            await trio.sleep(0.25)


def _not_allowed(allow: str) -> HttpResponse:
    return text(405, "method not allowed: this dashboard is read-only", headers=[("allow", allow)])


# ---------------------------------------------------------------- store jobs (one hop each)
def _list_data(conn: Any, f: wq.ListFilter,
               repos: tuple[int, list[str]]) -> tuple[Any, int, tuple[int, list[str]], Any]:
    data = wq.list_page(conn, f)
    seq = wq.max_seq(conn)
    if seq != repos[0]:  # repositories change only with new runs
        repos = (seq, wq.repos(conn))
    return data, wq.last_event_id(conn), repos, count_by_state(conn)


def _detail_data(conn: Any, rid: str) -> tuple[dict[str, Any] | None, int]:
    return wq.run_detail(conn, rid), wq.last_event_id(conn, rid)


def _detail_head(conn: Any, rid: str) -> tuple[Any, int]:
    return conn.execute("SELECT id FROM runs WHERE id = ?", (rid,)).fetchone(), 0


def _overview_data(conn: Any, day_start: float) -> tuple[dict[str, int], Any, Any]:
    from autopack.daemon._stats import compute_stats

    return count_by_state(conn), wq.day_figures(conn, day_start), compute_stats(conn, since_ts=None, by_arm=True)
