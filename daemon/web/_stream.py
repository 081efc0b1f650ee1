"""The one event stream: what ``autopackctl logs -f`` and the dashboard's live pages read.

:func:`event_stream` yields the events committed after a given id, of one run
or of all runs, in order, and waits for the store's "events committed" signal
when there are none (with a timeout, so a consumer can send keep-alives or check
a run's state). When issue 14's run engine lands, this is the one function to
point at its stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from ._queries import events_since

Fetch = Callable[..., list[dict[str, Any]]]


async def event_stream(store: Any, *, after: int, run_id: str | None = None,
                       fetch: Fetch | None = None, batch: int = 1000,
                       idle_s: float = 5.0) -> AsyncIterator[tuple[list[dict[str, Any]], bool]]:
    """Yield ``(events, caught_up)`` forever: each batch of events after ``after`` (of
    ``run_id``, or of every run when it is ``None``); ``caught_up`` is true when the batch
    reached the newest event. After ``idle_s`` without a new event it yields ``([], True)``.

    ``fetch(conn, run_id, after, limit)`` reads a batch on the store's read connection (default:
    :func:`._queries.events_since`, without payloads). No event is lost between a read and
    the wait: the wake-up signal is taken before reading.
    """
    read = fetch or events_since
    while True:
        waiter = store.changed_event()  # taken before reading: no lost wake-up
        events = await store.read(read, run_id, after, batch)
        caught_up = len(events) < batch
        if events:
            after = int(events[-1]["id"])
            yield events, caught_up
        if not caught_up:
            continue
        with trio.move_on_after(idle_s) as idle:
            await waiter.wait()
        if idle.cancelled_caught:
            yield [], True
