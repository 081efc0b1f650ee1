"""The request handler: control-protocol messages in, service calls, replies out.

``ControlServer`` calls :meth:`RequestHandler.dispatch` once per request. Every
request naming a run accepts a short id or ``latest`` (resolved first); the
services' refusals (:class:`~._runs.RequestError`, unknown or ambiguous runs,
invalid specs, a full disk) become ``Error`` replies with their codes. Anything
else is a bug: the control server answers it ``internal`` with an error id.
"""

from __future__ import annotations

import msgspec
from autopack.actors._memory import MemoryActor, handle_get_context, handle_get_lessons
from autopack.protocol import (
    Backup,
    Cancel,
    DebugFailpoint,
    ErrorCode,
    Follow,
    GetContext,
    GetDiff,
    GetHealth,
    GetLessons,
    GetReport,
    GetStats,
    GetStatus,
    ListRuns,
    NormalizePlan,
    Reply,
    Report,
    Request,
    Retry,
    SpecError,
    Stats,
    StorageError,
    Submit,
)
from autopack.protocol import Error as ProtoError

from . import _queries as q
from . import _runops as runops
from ._control import Connection
from ._healthview import HealthView
from ._report import render_markdown
from ._runs import RequestError, Runs

Extension = NormalizePlan | GetContext | GetLessons | GetStats


class RequestHandler:
    """Answers control requests with the Runs service, the health view and memory."""

    def __init__(self, *, runs: Runs, health: HealthView, memory: MemoryActor,
                 version: str) -> None:
        self.runs, self.health, self.memory, self.version = runs, health, memory, version

    async def dispatch(self, conn: Connection, req: Request) -> bool | None:
        """Answer one request. Return ``False`` to close the connection."""
        try:
            req = await self._resolve_run_ref(req)
            match req:
                case Submit():
                    await conn.send(await self.runs.submit(req))
                case GetStatus(run_id=run_id):
                    await conn.send(await self.runs.status(run_id))
                case ListRuns():
                    await conn.send(await self.runs.list_page(req))
                case Cancel(run_id=run_id):
                    await conn.send(await self.runs.cancel(run_id))
                case Follow():
                    await self.runs.follow(conn, req)
                case GetReport(run_id=run_id):
                    data = await self.runs.report(run_id)
                    await conn.send(Report(data=data, markdown=render_markdown(data)))
                case GetHealth():
                    await conn.send(await self.health.health())
                case Retry():
                    await conn.send(await self.runs.retry(req))
                case GetDiff():
                    await conn.send(await self.runs.diff(req))
                case Backup(path=path):
                    await conn.send(await self.runs.backup(path))
                case DebugFailpoint():
                    from ._debug import debug_failpoint

                    await conn.send(debug_failpoint(req, conn.peer_uid))
                case NormalizePlan() | GetContext() | GetLessons() | GetStats():
                    reply = await self.extension_request(req)
                    if isinstance(reply, ProtoError):
                        await conn.error(reply.code, reply.message, reply.details)
                    else:
                        await conn.send(reply)
                case _:
                    await conn.error(ErrorCode.BAD_FRAME, f"unexpected message {type(req).__name__}")
                    return False
        except q.UnknownRun as exc:
            await conn.error(ErrorCode.UNKNOWN_RUN, f"no run with id {exc.args[0]!r}")
        except runops.AmbiguousRun as exc:
            await conn.error(ErrorCode.AMBIGUOUS_RUN, str(exc))
        except (runops.RetryRefused, runops.DiffUnavailable) as exc:
            await conn.error(ErrorCode.INVALID_STATE, str(exc))
        except SpecError as exc:
            await conn.error(ErrorCode.INVALID_SPEC, f"invalid run spec ({len(exc.problems)} problem(s))",
                             [f"{p}: {r}" if p else r for p, r in exc.problems])
        except RequestError as exc:
            await conn.error(exc.code, exc.message, exc.details)
        except StorageError as exc:
            await conn.error(ErrorCode.STORAGE, f"{exc}; nothing was changed, try again later")
        return None

    async def _resolve_run_ref(self, req: Request) -> Request:
        """Every request naming a run accepts a short id or ``latest`` (see ``_runops``)."""
        ref = getattr(req, "run_id", None)
        if not isinstance(ref, str):
            return req
        full = await self.runs.resolve(ref)
        return req if full == ref else msgspec.structs.replace(req, run_id=full)

    async def extension_request(self, req: Extension) -> Reply:
        """Requests answered by memory, the stats query or the normalizer."""
        match req:
            case GetContext():
                current, spec = await self.runs.next_prompt(req.run_id)
                return await handle_get_context(self.memory.client(), req, current_phase=current,
                                                pending_spec=spec)
            case GetLessons():
                return await handle_get_lessons(self.memory.client(), req)
            case GetStats():
                return Stats(data=await self.runs.stats(req.since_s, req.by_arm))
            case NormalizePlan():
                return await self.runs.normalize(req)
        raise RequestError(ErrorCode.NOT_SUPPORTED, f"{type(req).__name__} is not supported")
