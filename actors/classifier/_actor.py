"""The classifier as a supervised, restartable actor.

Theory of operation
-------------------
Run actors hold a :class:`ClassifierClient` (from :meth:`ClassifierActor.client`); it
stays valid across restarts of the actor. Each call puts a :class:`ClassifyRequest` on
the actor's mailbox; the request carries its own reply channel, on which the actor sends
exactly one :class:`~autopack.protocol.Classification` and then closes it.

:meth:`ClassifierActor.serve` opens a *fresh* mailbox each time it is started, so the
supervisor can restart it after a crash. When it ends for any reason, the reply channel
of the request in hand and of every request still queued is closed unanswered: their
callers see the end at once (never their deadline) and :meth:`ClassifierClient.classify`
answers them ``pattern=None`` with a ``classifier_error`` detail, so the run takes the
Doctor's way. A caller that finds the actor down waits for it to come back within its
deadline, then gets the same unclassified answer.

Outputs above ``thread_threshold`` bytes are classified in a worker thread so a 10 MB
log never blocks the event loop. A bug inside :func:`classify` answers ``pattern=None``
and is kept in ``last_error``; the ``classifier.classify`` failpoint's ``panic`` crashes
the actor instead (what a bug in the actor itself would do).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from autopack.protocol import Classification, ClassifyContext

from .._failpoints import FailpointPanic, hit_async
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
    restarts: int = 0  # times serve was started again after the first
    unanswered: int = 0  # requests whose caller got "classifier unavailable"
    state: str = "down"  # up | down


class ClassifierActor:
    """Serves classification requests until cancelled (or a crash; then restart ``serve``)."""

    def __init__(self, *, thread_threshold: int = 64 * 1024, reply_timeout_s: float = 5.0,
                 queue_size: int = 16) -> None:
        self._thread_threshold = thread_threshold
        self._reply_timeout_s = reply_timeout_s
        self._queue_size = queue_size
        self._send: MemoryObjectSendStream[ClassifyRequest] | None = None
        self._up: anyio.Event | None = None  # set while serving; replaced when it stops
        self._starts = 0
        self._requests = 0
        self._classified = 0
        self._unclassified = 0
        self._unanswered = 0
        self._last_error: str | None = None

    def client(self) -> ClassifierClient:
        """A handle for callers; valid across restarts of :meth:`serve`."""
        return ClassifierClient(self)

    def statistics(self) -> ClassifierStatistics:
        """A snapshot of the counters (cheap, no await)."""
        send = self._send
        return ClassifierStatistics(
            requests=self._requests, classified=self._classified,
            unclassified=self._unclassified, last_error=self._last_error,
            queued=send.statistics().current_buffer_used if send is not None else 0,
            restarts=max(self._starts - 1, 0), unanswered=self._unanswered,
            state="up" if send is not None else "down")

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Answer requests on a fresh mailbox until cancelled; raises what crashed it.

        Calls ``task_status.started()`` once requests are accepted. Requests not answered
        when it ends are closed unanswered (their callers get "unclassified" at once)."""
        if self._send is not None:
            raise RuntimeError("ClassifierActor.serve is already running")
        self._starts += 1
        send, recv = anyio.create_memory_object_stream[ClassifyRequest](self._queue_size)
        current: ClassifyRequest | None = None
        self._send = send
        up = self._up = self._up or anyio.Event()
        up.set()
        try:
            task_status.started()
            async for request in recv:  # never ends by itself: this task holds ``send``
                current = request
                await self._handle(request)
                current = None
        finally:
            self._send, self._up = None, None
            if current is not None:
                current.reply.close()
            while True:
                try:
                    recv.receive_nowait().reply.close()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
            send.close()
            recv.close()

    async def _handle(self, request: ClassifyRequest) -> None:
        self._requests += 1
        try:
            await hit_async("classifier.classify")
            if len(request.output) >= self._thread_threshold:
                result = await anyio.to_thread.run_sync(classify, request.output, request.exit_code, request.ctx)
            else:
                result = classify(request.output, request.exit_code, request.ctx)
        except FailpointPanic:
            raise  # stands in for a bug in the actor itself: the supervisor restarts it
        except Exception as exc:  # a classifier bug must not take the actor down
            LOGGER.error("classifier failed: %s", exc, exc_info=True)
            self._last_error = f"{type(exc).__name__}: {exc}"
            result = Classification(pattern=None, details={"classifier_error": self._last_error})
        if result.pattern is None:
            self._unclassified += 1
        else:
            self._classified += 1
        reply: MemoryObjectSendStream[Classification] = request.reply
        with reply:
            with anyio.move_on_after(self._reply_timeout_s):
                try:
                    await reply.send(result)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    LOGGER.debug("classification requester went away")

    async def _mailbox(self) -> MemoryObjectSendStream[ClassifyRequest]:
        """The current mailbox; waits (under the caller's deadline) while the actor is down."""
        while self._send is None:
            if self._up is None:
                self._up = anyio.Event()
            await self._up.wait()
        return self._send


class ClassifierUnavailable(Exception):
    """The actor crashed, stopped or missed the deadline before answering (internal)."""


class ClassifierClient:
    """What run actors use to classify. Never raises for a classifier problem."""

    def __init__(self, actor: ClassifierActor) -> None:
        self._actor = actor

    async def classify(self, output: str | bytes, exit_code: int | None = None,
                       ctx: ClassifyContext | None = None, *,
                       timeout_s: float = 30.0) -> Classification:
        """The classification of ``output``; ``pattern=None`` with ``details.classifier_error``
        when the actor did not answer within ``timeout_s`` (down, crashed, wedged): the
        failure is then unclassified and goes the Doctor's way. Only cancellation of the
        caller's own scope propagates."""
        try:
            return await self._ask(output, exit_code, ctx or ClassifyContext(), timeout_s)
        except ClassifierUnavailable as exc:
            self._actor._unanswered += 1
            LOGGER.warning("classifier unavailable (%s); treating the failure as unclassified",
                           exc)
            return Classification(pattern=None, details={"classifier_error": str(exc)})

    async def _ask(self, output: str | bytes, exit_code: int | None, ctx: ClassifyContext,
                   timeout_s: float) -> Classification:
        try:
            with anyio.fail_after(timeout_s):
                mailbox = await self._actor._mailbox()
                send, receive = anyio.create_memory_object_stream[Classification](1)
                with receive:
                    try:
                        await mailbox.send(ClassifyRequest(output=output, exit_code=exit_code,
                                                           ctx=ctx, reply=send))
                    except BaseException:
                        send.close()  # never handed over: ours to close
                        raise
                    return await receive.receive()
        except TimeoutError:
            raise ClassifierUnavailable(f"no answer within {timeout_s:g} s") from None
        except anyio.EndOfStream:
            raise ClassifierUnavailable("the classifier stopped (crashed) before "
                                        "answering") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise ClassifierUnavailable("the classifier is restarting") from None

