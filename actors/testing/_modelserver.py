"""A scripted Messages API server on loopback, for tests and the offline demo.

It speaks enough of ``POST /v1/messages`` for the official ``anthropic`` SDK:
JSON responses, or server-sent events when the request asks for
``"stream": true``. It answers from a *scenario*, never from a model.

Theory of operation
-------------------
A scenario is JSON: either a list of scripts, or an object
``{"scripts": [...], "storm": {...}}``. Each request is routed to the first
script whose ``match`` substring appears in the request's system prompt or in
its first user message (so a phase goal is a good ``match``). A request no
script matches gets a 400 ``invalid_request_error`` naming the problem.

Within a script, the *step* of a request is the number of assistant messages it
carries: the first call of a conversation is step 0, the call after the first
tool round is step 1, and so on. That makes replies stateless with respect to
the conversation's content and lets any number of conversations run at once.
A conversation is identified by ``metadata.user_id`` (``autopack``'s client
sends the run id there); without it every request of a script shares one
conversation key.

Good ``match`` strings: the Builder's first user message starts with
``Carry out phase <id> (attempt <n>): <goal>`` and the Doctor's with
``Diagnose the failure of phase <id> (attempt <n>)``, so
``"Carry out phase api (attempt 2)"`` scripts one attempt and
``"Carry out phase api"`` every attempt of that phase.

Script format::

    {"match": "Add GET /health",
     "steps": [
       {"errors": [{"status": 429, "retry_after": 0.2, "times": 2},
                   {"status": 529}, {"status": 500}, {"status": 401},
                   {"hang": 5.0}],
        "content": [{"type": "text", "text": "Creating the file."},
                    {"type": "tool_use", "name": "str_replace_based_edit_tool",
                     "input": {"command": "create", "path": "app.py", "file_text": "..."}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1200, "output_tokens": 80,
                  "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 0}},
       {"content": [{"type": "text", "text": "Done."}]}
     ]}

- ``errors`` are served first, one per request, for *each* conversation at
  that step (``times`` repeats an entry); then the step's response. ``hang``
  sleeps that many seconds before answering normally (a client with a shorter
  timeout has gone by then, and its retry gets the next entry).
  ``status`` 429 and 529 carry ``retry-after`` / ``retry-after-ms`` headers
  when ``retry_after`` is given.
- ``stop_reason`` defaults to ``tool_use`` when the content has a tool_use
  block, else ``end_turn``; tool_use ids default to unique ``toolu_…`` ids;
  ``usage`` defaults to 100 input / 20 output tokens.
- Past its last step a script answers ``end_turn`` with the text
  ``(script exhausted)``, counted as ``unscripted`` in the statistics.

``storm`` (optional, scenario level): ``{"status": 429, "retry_after": 0.2,
"seconds": 0.6}`` answers *every* request with that error for ``seconds``
after the first request the server sees — a rate-limit storm or an outage
shared by all conversations.

Usage: derived from the request, not scripted
---------------------------------------------
By default every reply's ``input_tokens``, ``cache_creation_input_tokens`` and
``cache_read_input_tokens`` are **derived from the request itself**
(:class:`TokenModel`): about one token per 4 bytes of text, tool input and tool
schema, a few tokens of framing per block, 300 tokens of tool-use system
prompt when tools are given (the real API adds ~350), and the documented size
of Anthropic-defined tools (bash 245, text editor 700). Prompt caching is
simulated as the API documents it: the prompt is tools, then system, then
messages; a block with ``cache_control`` is a breakpoint; a prefix is written
to the cache at a breakpoint if it is at least 1,024 tokens long, and a later
request reads the longest cached prefix that ends at one of its block
boundaries at most 20 blocks before one of its breakpoints (cache entries do
not expire here: runs are shorter than the 5-minute TTL). The rest of the
prompt is ``input_tokens``. Each model has its own cache (a prefix cached for one model
is written again for another), and a model of Claude 4.7 or later counts every figure,
output too, 1.3× (its newer tokenizer: the same text is ~30% more tokens).
``output_tokens`` is the scripted figure when the
step gives one (what the model chose to write), else derived from the reply's
content; it is capped at the request's ``max_tokens`` (``stop_reason``
``max_tokens`` then). A request's ``context_management`` edit
``clear_tool_uses_20250919`` is applied as the API documents it before the
prompt is billed (:meth:`TokenModel.apply_context_edits`), so the API's
context editing and our own pruning can be measured the same way.
``POST /v1/messages/count_tokens`` answers the same
total a ``/v1/messages`` call of that prompt is billed for.

A scenario with ``"count_tokens": false`` answers that endpoint 404 (a proxy
without it). A scenario with ``"usage": "scripted"`` (object form) takes every figure of a
step's ``usage`` as given instead, for tests of the accounting plumbing.

Statistics: ``GET /_stats`` (or :meth:`ScriptedServer.stats` in-process)
returns request counts by status and by script, the number of hangs,
unscripted replies, the most requests in flight at once, and the sum of the
usage figures of every 200 reply (``usage_totals``), which tests compare with
what the client accounted.

Run it as a process for the demo::

    python -m autopack.testing --scenario FILE [--port 0]

It prints its base URL (``http://127.0.0.1:PORT``) as the first line of
stdout and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_DEFAULT_USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
}
_USAGE_KEYS = tuple(_DEFAULT_USAGE)


class TokenModel:
    """Token counts of requests, and the simulated prompt cache (see the module docstring).

    Deterministic and documented, so tests and the A/B bench price what a
    request really carries: a longer prompt costs more, a cached prefix less.
    """

    BYTES_PER_TOKEN = 4
    BLOCK_OVERHEAD = 4
    TOOLS_OVERHEAD = 300
    MIN_CACHEABLE = 1024
    LOOKBACK = 20
    #: Claude 4.7 and later use a newer tokenizer: the same text counts as about 30% more
    #: tokens (the model overview pages say so); the figures above are the older one's.
    NEWER_TOKENIZER = ("claude-opus-4-7", "claude-opus-4-8", "claude-opus-5", "claude-sonnet-5",
                       "claude-haiku-5", "claude-fable", "claude-mythos")
    NEWER_FACTOR = 1.3

    def __init__(self) -> None:
        self._cache: set[str] = set()

    @classmethod
    def factor(cls, model: Any) -> float:
        """Tokens of this model's tokenizer per token of the older one (1.0 or 1.3)."""
        return cls.NEWER_FACTOR if str(model or "").startswith(cls.NEWER_TOKENIZER) else 1.0

    @classmethod
    def tokens_of_text(cls, text: str) -> int:
        return -(-len(text.encode("utf-8")) // cls.BYTES_PER_TOKEN)

    @classmethod
    def _segments(cls, body: dict[str, Any]) -> list[tuple[str, int, bool]]:
        """(canonical text without cache_control, tokens, is a breakpoint) per prompt block."""
        out: list[tuple[str, int, bool]] = []

        def add(block: Any, extra: int = 0) -> None:
            mark = isinstance(block, dict) and "cache_control" in block
            clean = ({k: v for k, v in block.items() if k != "cache_control"}
                     if isinstance(block, dict) else block)
            text = json.dumps(clean, sort_keys=True, ensure_ascii=False)
            if isinstance(clean, dict) and clean.get("type") == "text":
                size = cls.tokens_of_text(str(clean.get("text", "")))
            elif isinstance(clean, dict) and clean.get("type") == "tool_result":
                size = cls.tokens_of_text(_text_of(clean.get("content")) or str(clean.get("content", "")))
            elif isinstance(clean, dict) and clean.get("type") == "tool_use":
                size = cls.tokens_of_text(json.dumps(clean.get("input", {}))) + 8
            elif isinstance(clean, str):
                size = cls.tokens_of_text(clean)
            else:
                size = cls.tokens_of_text(text)
            out.append((text, size + cls.BLOCK_OVERHEAD + extra, mark))

        tools = body.get("tools") or []
        for i, tool in enumerate(tools):
            kind = str(tool.get("type", "")) if isinstance(tool, dict) else ""
            # Anthropic-defined tools bring their own schema: the API documents
            # 245 input tokens for bash and 700 for the text editor
            builtin = 245 if kind.startswith("bash_") else 700 if kind.startswith("text_editor_") else 0
            add(tool, (cls.TOOLS_OVERHEAD if i == 0 else 0) + builtin)
        system = body.get("system")
        for block in ([{"type": "text", "text": system}] if isinstance(system, str)
                      else system or []):
            add(block)
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for block in blocks or []:
                add({"role": message.get("role"), **block} if isinstance(block, dict) else block)
        factor = cls.factor(body.get("model"))
        return out if factor == 1.0 else [(t, -(-int(n * factor * 10) // 10), m) for t, n, m in out]

    def apply_context_edits(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The API's context editing (``clear_tool_uses_20250919``): when the prompt is
        over ``trigger`` input tokens, the results of all tool uses but the last ``keep``
        are replaced by a placeholder before the prompt is billed (if that clears at
        least ``clear_at_least`` tokens). Returns the body billed and the
        ``context_management`` field of the reply (``None`` when nothing applies)."""
        edits = ((body.get("context_management") or {}).get("edits") or [])
        edit = next((e for e in edits if isinstance(e, dict)
                     and e.get("type") == "clear_tool_uses_20250919"), None)
        if edit is None:
            return body, None
        trigger = int((edit.get("trigger") or {}).get("value", 100_000))
        keep = int((edit.get("keep") or {}).get("value", 3))
        least = int((edit.get("clear_at_least") or {}).get("value", 0))
        applied = {"applied_edits": []}  # type: dict[str, Any]
        if self.count(body) <= trigger:
            return body, applied
        ids = [b.get("tool_use_id") for m in body.get("messages") or [] if isinstance(m, dict)
               and isinstance(m.get("content"), list) for b in m["content"]
               if isinstance(b, dict) and b.get("type") == "tool_result"]
        clear = set(ids[:-keep] if keep else ids)
        messages = []
        for m in body.get("messages") or []:
            if isinstance(m, dict) and isinstance(m.get("content"), list):
                m = {**m, "content": [
                    {**b, "content": "[tool result cleared by context management]"}
                    if isinstance(b, dict) and b.get("type") == "tool_result"
                    and b.get("tool_use_id") in clear else b for b in m["content"]]}
            messages.append(m)
        edited = {**body, "messages": messages}
        cleared = self.count(body) - self.count(edited)
        if cleared < least or not clear:
            return body, applied
        applied["applied_edits"].append({"type": "clear_tool_uses_20250919",
                                         "cleared_tool_uses": len(clear),
                                         "cleared_input_tokens": cleared})
        return edited, applied

    def count(self, body: dict[str, Any]) -> int:
        """Total input tokens of a request (what ``count_tokens`` answers)."""
        return sum(size for _, size, _ in self._segments(body))

    def bill(self, body: dict[str, Any]) -> dict[str, int]:
        """``input_tokens`` / ``cache_creation_input_tokens`` / ``cache_read_input_tokens``
        of a request, reading and writing the simulated cache."""
        import hashlib

        segments = self._segments(body)
        digest = hashlib.sha256()
        digest.update(str(body.get("model") or "").encode())  # each model has its own cache
        hashes: list[str] = []
        totals: list[int] = []
        running = 0
        for text, size, _ in segments:
            digest.update(text.encode())
            hashes.append(digest.copy().hexdigest())
            running += size
            totals.append(running)
        marks = [i for i, (_, _, mark) in enumerate(segments) if mark]
        read_at = -1
        for b in marks:
            for j in range(b, max(-1, b - self.LOOKBACK - 1), -1):
                if hashes[j] in self._cache:
                    read_at = max(read_at, j)
                    break
        read = totals[read_at] if read_at >= 0 else 0
        written = 0
        for b in marks:
            if totals[b] >= self.MIN_CACHEABLE:
                self._cache.add(hashes[b])
                written = max(written, totals[b] - read)
        total = running
        return {"input_tokens": total - read - written, "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read}


def load_scenario(source: str | Path | list[Any] | dict[str, Any]) -> dict[str, Any]:
    """Normalise a scenario (path, JSON list of scripts, or object) to ``{"scripts": [...], ...}``.

    Raises ``ValueError`` for a scenario without scripts or a script without ``match``.
    """
    if isinstance(source, str | Path):
        data: Any = json.loads(Path(source).read_text(encoding="utf-8"))
    else:
        data = source
    if isinstance(data, list):
        data = {"scripts": data}
    if not isinstance(data, dict) or not isinstance(data.get("scripts"), list):
        raise ValueError("scenario must be a list of scripts or an object with 'scripts'")
    for i, script in enumerate(data["scripts"]):
        if not isinstance(script, dict) or not isinstance(script.get("match"), str):
            raise ValueError(f"scripts[{i}] needs a 'match' string")
        if not isinstance(script.get("steps", []), list):
            raise ValueError(f"scripts[{i}].steps must be a list")
    return data


def _text_of(value: Any) -> str:
    """Plain text of a system prompt or message content (string or list of blocks)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for block in value:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return "\n".join(parts)
    return ""


class _Reply:
    """What to send for one request: an error, a message, and an optional delay first."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str],
                 delay: float = 0.0) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.delay = delay


class ScriptedServer:
    """The scripted server. ``start()`` returns the base URL; ``stop()`` ends it.

    Thread-safe: the HTTP server handles each connection on its own thread and
    every piece of shared state is guarded by one lock.
    """

    def __init__(self, scenario: str | Path | list[Any] | dict[str, Any], *,
                 host: str = "127.0.0.1", port: int = 0, keep_bodies: bool = True) -> None:
        self.scenario = load_scenario(scenario)
        self._host = host
        self._port = port
        self._keep_bodies = keep_bodies
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._counters: Counter[tuple[int, str, int]] = Counter()
        self._by_status: Counter[str] = Counter()
        self._by_script: Counter[str] = Counter()
        self._usage_totals: Counter[str] = Counter()
        self._unscripted = 0
        self._hangs = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._first_request_at: float | None = None
        self._ids = itertools.count(1)
        self.tokens = TokenModel()
        self.derived = self.scenario.get("usage") != "scripted"
        self._counted = 0
        self.requests: list[dict[str, Any]] = []  # in-process only: request bodies, in order
        self.counted: list[dict[str, Any]] = []  # in-process only: count_tokens bodies
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> str:
        """Bind, start serving on a daemon thread, and return the base URL."""
        server = self

        class Handler(_Handler):
            scripted = server

        self._httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="modelserver",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        """Stop serving; hanging handlers wake up at once. Idempotent."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- statistics ----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Request counts and usage totals (see the module docstring)."""
        with self._lock:
            return {
                "requests": sum(self._by_status.values()),
                "by_status": dict(self._by_status),
                "by_script": dict(self._by_script),
                "unscripted": self._unscripted,
                "hangs": self._hangs,
                "max_in_flight": self._max_in_flight,
                "token_counts": self._counted,
                "usage_totals": {k: self._usage_totals[k] for k in _USAGE_KEYS},
            }

    # -- routing -------------------------------------------------------------------
    def _route(self, body: dict[str, Any]) -> tuple[int | None, str]:
        haystacks = [_text_of(body.get("system"))]
        messages = body.get("messages") or []
        if messages and isinstance(messages[0], dict):
            haystacks.append(_text_of(messages[0].get("content")))
        for index, script in enumerate(self.scenario["scripts"]):
            if any(script["match"] in text for text in haystacks):
                return index, script["match"]
        return None, ""

    def decide(self, body: dict[str, Any]) -> _Reply:
        """Choose the reply for one decoded request body (and record it)."""
        with self._lock:
            now = time.monotonic()
            if self._first_request_at is None:
                self._first_request_at = now
            if self._keep_bodies:
                self.requests.append(body)
            storm = self.scenario.get("storm")
            if storm and now - self._first_request_at < float(storm.get("seconds", 0)):
                return self._error(storm, "storm")
            index, match = self._route(body)
            if index is None:
                return self._error({"status": 400, "message": "no script matches this request"},
                                   "unmatched")
            script = self.scenario["scripts"][index]
            self._by_script[match] += 1
            messages = body.get("messages") or []
            step = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
            conv = str((body.get("metadata") or {}).get("user_id") or "")
            seen = self._counters[(index, conv, step)]
            self._counters[(index, conv, step)] += 1
            steps = script.get("steps", [])
            if step >= len(steps):
                self._unscripted += 1
                return self._message(body, {"content": [{"type": "text", "text": "(script exhausted)"}]})
            spec = steps[step]
            errors = [e for e in spec.get("errors", []) for _ in range(int(e.get("times", 1)))]
            if seen < len(errors):
                entry = errors[seen]
                if "hang" in entry:
                    self._hangs += 1
                    reply = self._message(body, spec)
                    reply.delay = float(entry["hang"])
                    return reply
                return self._error(entry, match)
            return self._message(body, spec)

    def _error(self, entry: dict[str, Any], label: str) -> _Reply:
        status = int(entry.get("status", 500))
        etype = entry.get("type") or _ERROR_TYPES.get(status, "api_error")
        headers = {"request-id": f"req_scr_{next(self._ids)}"}
        if "retry_after" in entry:
            seconds = float(entry["retry_after"])
            headers["retry-after-ms"] = str(int(seconds * 1000))
            headers["retry-after"] = str(max(1, round(seconds)))
        message = entry.get("message") or f"scripted {etype} ({label})"
        body = {"type": "error", "error": {"type": etype, "message": message},
                "request_id": headers["request-id"]}
        return _Reply(status, body, headers)

    def _message(self, request: dict[str, Any], spec: dict[str, Any]) -> _Reply:
        n = next(self._ids)
        content = []
        for i, block in enumerate(spec.get("content", [])):
            block = dict(block)
            if block.get("type") == "tool_use":
                block.setdefault("id", f"toolu_scr_{n}_{i}")
                block.setdefault("input", {})
            content.append(block)
        has_tool = any(b.get("type") == "tool_use" for b in content)
        usage = {**_DEFAULT_USAGE, **spec.get("usage", {})}
        stop_reason = spec.get("stop_reason") or ("tool_use" if has_tool else "end_turn")
        billed, managed = self.tokens.apply_context_edits(request)
        if self.derived:
            usage.update(self.tokens.bill(billed))
            if "output_tokens" not in spec.get("usage", {}):
                usage["output_tokens"] = max(1, self.tokens.tokens_of_text(json.dumps(content)))
            # scripted figures count the older tokenizer's tokens (what Sonnet 4.6 would emit)
            usage["output_tokens"] = -(-int(usage["output_tokens"] * 10 * self.tokens.factor(
                request.get("model"))) // 10)
        limit = request.get("max_tokens")
        if isinstance(limit, int) and usage["output_tokens"] > limit:
            usage["output_tokens"] = limit
            stop_reason = "max_tokens"
        body = {
            "id": f"msg_scr_{n}",
            "type": "message",
            "role": "assistant",
            "model": spec.get("model") or request.get("model") or "scripted",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if managed is not None:
            body["context_management"] = managed
        return _Reply(200, body, {"request-id": f"req_scr_{n}"})

    def count_tokens(self, body: dict[str, Any]) -> dict[str, int]:
        """The answer of ``/v1/messages/count_tokens`` (recorded in the statistics)."""
        with self._lock:
            self._counted += 1
            if self._keep_bodies:
                self.counted.append(body)
            return {"input_tokens": self.tokens.count(body)}

    def _finished(self, reply: _Reply) -> None:
        with self._lock:
            self._by_status[str(reply.status)] += 1
            if reply.status == 200:
                for key in _USAGE_KEYS:
                    self._usage_totals[key] += int(reply.body["usage"].get(key) or 0)

    @contextlib.contextmanager
    def _tracking(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    scripted: ScriptedServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        LOGGER.debug("modelserver: " + format, *args)

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if self.path.rstrip("/") == "/_stats":
            self._send_json(200, self.scripted.stats())
        else:
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                             "message": self.path}})

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        path = self.path.split("?")[0].rstrip("/")
        if path == "/v1/messages/count_tokens" and self.scripted.scenario.get("count_tokens", True):
            try:
                body = json.loads(raw)
                self._send_json(200, self.scripted.count_tokens(body))
            except (ValueError, AttributeError) as exc:
                self._send_json(400, {"type": "error", "error": {
                    "type": "invalid_request_error", "message": f"bad JSON: {exc}"}})
            return
        if path != "/v1/messages":
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                             "message": self.path}})
            return
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as exc:
            self._send_json(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                             "message": f"bad JSON: {exc}"}})
            return
        with self.scripted._tracking():
            reply = self.scripted.decide(body)
            if reply.delay and self.scripted._stopping.wait(reply.delay):
                return  # stopping: drop the connection
            self.scripted._finished(reply)
            try:
                if reply.status == 200 and body.get("stream"):
                    self._send_stream(reply)
                else:
                    self._send_json(reply.status, reply.body, reply.headers)
            except (BrokenPipeError, ConnectionResetError):
                LOGGER.debug("modelserver: client went away (timed out?)")

    def _send_stream(self, reply: _Reply) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        for event, data in _sse_events(reply.body):
            self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


def _sse_events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The streaming events that rebuild ``message`` on the client side."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**usage, "output_tokens": 0}}
    yield "message_start", {"type": "message_start", "message": start}
    for i, block in enumerate(message["content"]):
        if block.get("type") == "tool_use":
            yield "content_block_start", {"type": "content_block_start", "index": i,
                                          "content_block": {**block, "input": {}}}
            delta: dict[str, Any] = {"type": "input_json_delta",
                                     "partial_json": json.dumps(block["input"])}
        else:
            yield "content_block_start", {"type": "content_block_start", "index": i,
                                          "content_block": {**block, "text": ""}}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                            "usage": usage}
    yield "message_stop", {"type": "message_stop"}


@contextlib.asynccontextmanager
async def serve_scripted(scenario: str | Path | list[Any] | dict[str, Any]
                         ) -> AsyncIterator[ScriptedServer]:
    """Run a :class:`ScriptedServer` for the duration of the block; yields it (``.url``, ``.stats()``).

    Works under trio and asyncio (the server lives on its own threads).
    """
    import anyio

    server = ScriptedServer(scenario)
    server.start()
    try:
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.stop)


def main(argv: list[str] | None = None) -> int:
    """``python -m autopack.testing --scenario FILE [--port N] [--host H]``."""
    parser = argparse.ArgumentParser(prog="python -m autopack.testing",
                                     description="Scripted Messages API server (offline demo, tests)")
    parser.add_argument("--scenario", required=True, help="scenario JSON file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    try:
        server = ScriptedServer(args.scenario, host=args.host, port=args.port, keep_bodies=False)
    except (OSError, ValueError) as exc:
        print(f"modelserver: {exc}", file=sys.stderr)
        return 2
    print(server.start(), flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
