"""The classifier as a supervised actor.

Run actors send :class:`ClassifyRequest` messages on the actor's memory
channel; each request carries its own reply channel, on which the actor sends
exactly one :class:`~autopack.protocol.Classification` and then closes it.
Outputs above ``thread_threshold`` bytes are classified in a worker thread so
a 10 MB log never blocks the event loop. A bug in the classifier answers
``pattern=None`` (the Doctor takes over) and is kept in ``last_error``.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from autopack.protocol import Classification, ClassifyContext

from ._core import classify

LOGGER = logging.getLogger(__name__)


class ClassifyRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Classify ``output``; the answer goes to ``reply`` (a send stream the requester receives from)."""

    output: str | bytes
    exit_code: int | None = None
    ctx: ClassifyContext = msgspec.field(default_factory=ClassifyContext)
    reply: Any  # MemoryObjectSendStream[Classification]; the actor closes it after answering


class ClassifierStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters for health and metrics."""

    requests: int = 0
    classified: int = 0
    unclassified: int = 0
    last_error: str | None = None
    queued: int = 0  # requests waiting in the mailbox


class ClassifierActor:
    """Serves classification requests from ``receive`` until it is closed or the actor is cancelled.

    Create with :meth:`open`, which also returns the send side to hand to run
    actors (``clone()`` it for each sender).
    """

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[ClassifyRequest],
        *,
        thread_threshold: int = 64 * 1024,
        reply_timeout_s: float = 5.0,
    ) -> None:
        self._receive = receive
        self._thread_threshold = thread_threshold
        self._reply_timeout_s = reply_timeout_s
        self._requests = 0
        self._classified = 0
        self._unclassified = 0
        self._last_error: str | None = None

    @classmethod
    def open(cls, *, buffer: int = 16, **kwargs: Any) -> tuple[ClassifierActor, MemoryObjectSendStream[ClassifyRequest]]:
        """A new actor and the send side of its mailbox."""
        send, receive = anyio.create_memory_object_stream[ClassifyRequest](buffer)
        return cls(receive, **kwargs), send

    def statistics(self) -> ClassifierStatistics:
        """A snapshot of the counters (cheap, no await)."""
        return ClassifierStatistics(
            requests=self._requests,
            classified=self._classified,
            unclassified=self._unclassified,
            last_error=self._last_error,
            queued=self._receive.statistics().current_buffer_used,
        )

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Answer requests until every sender has closed its side (then return)."""
        async with self._receive:
            task_status.started()
            async for request in self._receive:
                await self._handle(request)

    async def _handle(self, request: ClassifyRequest) -> None:
        self._requests += 1
        try:
            if len(request.output) >= self._thread_threshold:
                result = await anyio.to_thread.run_sync(classify, request.output, request.exit_code, request.ctx)
            else:
                result = classify(request.output, request.exit_code, request.ctx)
        except Exception as exc:  # a classifier bug must not take the actor down
            LOGGER.error("classifier failed: %s", exc, exc_info=True)
            self._last_error = f"{type(exc).__name__}: {exc}"
            result = Classification(pattern=None, details={"classifier_error": self._last_error})
        if result.pattern is None:
            self._unclassified += 1
        else:
            self._classified += 1
        reply: MemoryObjectSendStream[Classification] = request.reply
        async with reply:
            with anyio.move_on_after(self._reply_timeout_s):
                try:
                    await reply.send(result)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    LOGGER.debug("classification requester went away")


async def request_classification(
    mailbox: MemoryObjectSendStream[ClassifyRequest],
    output: str | bytes,
    exit_code: int | None = None,
    ctx: ClassifyContext | None = None,
    *,
    timeout_s: float = 30.0,
) -> Classification:
    """Ask the actor behind ``mailbox`` and wait for the answer.

    Raises ``TimeoutError`` when no answer arrives within ``timeout_s``
    (classification of 10 MB takes well under a second; this is a deadline for a wedged actor).
    """
    send, receive = anyio.create_memory_object_stream[Classification](1)
    async with receive:
        with anyio.fail_after(timeout_s):
            await mailbox.send(ClassifyRequest(output=output, exit_code=exit_code, ctx=ctx or ClassifyContext(), reply=send))
            return await receive.receive()
