"""Paged replies: no reply of the daemon may pass the frame limit.

Pure helpers (no I/O): the daemon builds each page's items, these decide where
the page ends and what cursor lets the client continue. ``ListRuns`` pages by
the runs' ``seq`` (newest first, ``before`` = last seq sent), ``Follow`` by event
id (``after`` = last id sent).
"""

from __future__ import annotations

from typing import Any

import msgspec
from autopack.protocol import EventMsg, RunList, RunStatus

MAX_PAGE_RUNS = 2000
"""At most this many runs in one ``RunList`` whatever ``limit`` asks (bounded phase query)."""
FRAME_MARGIN = 4096
"""Bytes of a frame kept free for the reply's own envelope."""

_encoder = msgspec.msgpack.Encoder()


def run_page(items: list[tuple[int, RunStatus]], limit: int, max_frame: int) -> RunList:
    """The first runs of ``items`` (``(seq, status)``, newest first, up to ``limit + 1`` of
    them) that fit in one frame; ``next_cursor`` is set when any were left out."""
    budget = max_frame - FRAME_MARGIN
    runs: list[RunStatus] = []
    used = 0
    for i, (_seq, status) in enumerate(items):
        size = len(_encoder.encode(status))
        if i == limit or (runs and used + size > budget):
            return RunList(runs=runs, next_cursor=items[i - 1][0])
        runs.append(status)
        used += size
    return RunList(runs=runs, next_cursor=None)


def fit_event(event: dict[str, Any], max_frame: int) -> EventMsg:
    """The event as a reply; a payload too big for one frame is replaced by a note saying
    so (the full record stays in the database and the report)."""
    msg = EventMsg(**event)
    size = len(_encoder.encode(msg))
    if size <= max_frame - FRAME_MARGIN:
        return msg
    return EventMsg(**{**event, "payload": {"truncated": True, "payload_bytes": size}})
