"""Messages on the control socket.

One tagged base per direction: ``Request`` (client → daemon) and ``Reply``
(daemon → client). Tags live in the ``"t"`` field. New fields always get
defaults so older peers keep working. The connection starts with
``Hello`` → ``Welcome``; every failure is an ``Error`` with a stable code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from ._classification import Classification
from ._spec import RunSpec

PROTOCOL_VERSION = 1

# Bounds on request fields (docs/protocol bounds in docs/operations.md). A request outside
# them is answered ``invalid_request`` naming the field; the connection stays usable.
INT64_MAX = 2**63 - 1
EventId = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
Count = Annotated[int, msgspec.Meta(ge=0, le=10_000)]
Seconds = Annotated[float, msgspec.Meta(ge=0, le=100 * 365 * 86_400)]
RunId = Annotated[str, msgspec.Meta(max_length=256)]


class Request(msgspec.Struct, tag_field="t", frozen=True, kw_only=True):
    """Base of every client → daemon message."""


class Reply(msgspec.Struct, tag_field="t", frozen=True, kw_only=True):
    """Base of every daemon → client message."""


# ---------------------------------------------------------------- requests
class Hello(Request, tag="hello", frozen=True):
    version: Annotated[int, msgspec.Meta(ge=0, le=2**31)] = PROTOCOL_VERSION
    client: Annotated[str, msgspec.Meta(max_length=256)] = "autopackctl"


class Submit(Request, tag="submit", frozen=True):
    spec: RunSpec
    repo: str | None = None  # overrides spec.repo; absolute path
    # force an A/B arm; None = daemon decides
    arm: Literal["hardened", "baseline"] | None = None


class NormalizePlan(Request, tag="normalize", frozen=True):
    plan: str
    repo: str | None = None
    llm: bool = False  # let Claude fill the spec (through the daemon's shared LLM client)


class ListRuns(Request, tag="list", frozen=True):
    """Runs, newest first, one page per request.

    The daemon answers at most ``limit`` runs (fewer when the page would pass the
    frame limit) and sets ``RunList.next_cursor`` when older runs may follow: ask
    again with ``before=next_cursor`` until it is ``None``. Paging by cursor returns
    each run exactly once even while runs are being submitted (new runs are newer
    than the first page).
    """

    state: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    limit: Count = 100
    before: EventId | None = None  # cursor: only runs older than this (a RunList.next_cursor)
    states: Annotated[list[str], msgspec.Meta(max_length=16)] = []  # only runs in any of these states (together with ``state``)


class GetStatus(Request, tag="status", frozen=True):
    run_id: RunId


class GetReport(Request, tag="report", frozen=True):
    run_id: RunId


class Cancel(Request, tag="cancel", frozen=True):
    run_id: RunId


class Follow(Request, tag="logs", frozen=True):
    """Stream events of a run: ``EventMsg`` replies, then ``LogsEnd``.

    With ``follow`` the stream stays open until the run ends.
    """

    run_id: RunId
    follow: bool = False
    after: EventId = 0  # event id to start after (the ``id`` of the last EventMsg received)
    limit: EventId = 0  # without ``follow``: at most this many events, then LogsEnd (0 = all)


class GetHealth(Request, tag="health", frozen=True):
    pass


class GetContext(Request, tag="context", frozen=True):
    run_id: RunId
    phase: str | None = None
    role: Annotated[str, msgspec.Meta(max_length=64)] = "builder"


class GetLessons(Request, tag="lessons", frozen=True):
    repo: str | None = None
    search: str | None = None
    limit: Count = 50


class GetStats(Request, tag="stats", frozen=True):
    since_s: Seconds | None = None
    by_arm: bool = False


class Retry(Request, tag="retry", frozen=True):
    """Start a new run continuing a failed one from ``from_phase`` (default: its first
    phase that did not succeed); earlier phases' commits are kept. Answered ``Submitted``."""

    run_id: str
    from_phase: str | None = None


class GetDiff(Request, tag="diff", frozen=True):
    """The run's change against its base (for a retry: the original run's base)."""

    run_id: str
    max_bytes: int = 900_000  # the patch is cut here (``truncated``) to fit one frame


class Backup(Request, tag="backup", frozen=True):
    """Write a consistent copy of the database to ``path`` (absolute, on the daemon's host,
    must not exist) with SQLite's online backup API; the daemon keeps serving."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class DebugFailpoint(Request, tag="debug_failpoint", frozen=True):
    """Arm or disarm failpoints in the running daemon (``autopackctl debug failpoint``).

    ``arm``: ``NAME=ACTION;NAME=ACTION`` (``off`` disarms one); ``clear``: disarm all
    first. Both empty: only list. Only the daemon's own uid and root may send it."""

    arm: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    clear: bool = False


# ---------------------------------------------------------------- replies
class Welcome(Reply, tag="welcome", frozen=True):
    version: int = PROTOCOL_VERSION
    daemon: str = ""
    pid: int = 0


class Error(Reply, tag="error", frozen=True):
    code: str
    message: str
    details: list[str] = []


class Submitted(Reply, tag="submitted", frozen=True):
    run_id: RunId


class PhaseState(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    state: str
    attempts: int = 0
    kind: str = "build"
    reason: str | None = None
    commit: str | None = None


class RunStatus(Reply, tag="run_status", frozen=True):
    run_id: RunId
    state: str
    reason: str | None = None
    phases: list[PhaseState] = []
    goal: str = ""
    repo: str = ""
    branch: str = ""
    arm: str = "hardened"
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    sandbox: str = ""  # the daemon's sandbox: "bwrap", or "off"/"unavailable" (unconfined)
    tokens: int | None = None  # model tokens spent so far (filled by GetStatus, not by ListRuns)
    # limits, spending and, once refused, the figures of the refused call (GetStatus only);
    # keys as the report's "budget" (daemon/_report.py budget_summary)
    budget: dict[str, Any] | None = None


class RunList(Reply, tag="run_list", frozen=True):
    runs: list[RunStatus]
    next_cursor: int | None = None  # more (older) runs may follow: ListRuns(before=next_cursor)


class Report(Reply, tag="report", frozen=True):
    """The run report; ``data`` holds the JSON report (keys per DESIGN.md)."""

    data: dict[str, Any]
    markdown: str = ""


class Ok(Reply, tag="ok", frozen=True):
    message: str = ""


class EventMsg(Reply, tag="event", frozen=True):
    id: int
    run_id: str
    phase_id: str | None
    attempt: int | None
    kind: str
    ts: float
    payload: dict[str, Any] = {}


class LogsEnd(Reply, tag="logs_end", frozen=True):
    state: str
    last_id: int = 0  # id of the last event sent: Follow(after=last_id) continues from here
    more: bool = False  # stopped at ``Follow.limit`` with events left


class Health(Reply, tag="health", frozen=True):
    alive: bool
    ready: bool
    parts: dict[str, str] = {}  # actor -> "ok" | "degraded" | "down"
    degraded: list[str] = []
    runs: dict[str, int] = {}
    version: str = ""
    endpoints: dict[str, str] = {}  # "health": "http://127.0.0.1:7878", "socket": path
    sandbox: str = ""  # "bwrap" | "unavailable" | "off": what confines run commands
    sandbox_detail: str = ""  # the start-up probe's finding (flags used, or why unavailable)
    # per part: {"restarts": n, "errors": n, "last_error": text or None}
    details: dict[str, dict[str, Any]] = {}
    # per supervised child: {"state", "restarts", "recent_restarts", "limit", "window_s",
    # "last_error", "degradable"}; more than ``limit`` recent restarts and the daemon gives up
    children: dict[str, dict[str, Any]] = {}


class Normalized(Reply, tag="normalized", frozen=True):
    spec: dict[str, Any]
    confidence: float
    warnings: list[str] = []
    phases: list[dict[str, Any]] = []  # per-phase confidence and reasons


class ContextReply(Reply, tag="context", frozen=True):
    text: str
    bytes: int
    degraded: bool = False


class Lessons(Reply, tag="lessons", frozen=True):
    lessons: list[dict[str, Any]]


class Stats(Reply, tag="stats", frozen=True):
    data: dict[str, Any]


class Diff(Reply, tag="diff", frozen=True):
    run_id: str
    repo: str
    base: str
    head: str
    stat: str = ""  # git diff --stat
    patch: str = ""
    truncated: bool = False


class BackedUp(Reply, tag="backed_up", frozen=True):
    path: str
    bytes: int


class Failpoints(Reply, tag="failpoints", frozen=True):
    """The failpoints armed now: name -> term (``N*`` counts what is left), and how often
    each fired since it was armed."""

    armed: dict[str, str] = {}
    fired: dict[str, int] = {}


class Classified(Reply, tag="classified", frozen=True):
    classification: Classification


ClientMessage = (
    Hello | Submit | NormalizePlan | ListRuns | GetStatus | GetReport | Cancel | Follow
    | GetHealth | GetContext | GetLessons | GetStats | Retry | GetDiff | Backup | DebugFailpoint
)
ServerMessage = (
    Welcome | Error | Submitted | RunStatus | RunList | Report | Ok | EventMsg | LogsEnd
    | Health | Normalized | ContextReply | Lessons | Stats | Classified | Diff | BackedUp
    | Failpoints
)

__all__ = ['BackedUp', 'Backup', 'Cancel', 'Classified', 'ClientMessage', 'ContextReply', 'DebugFailpoint', 'Diff', 'Error', 'EventMsg', 'Failpoints', 'Follow', 'GetContext', 'GetDiff', 'GetHealth', 'GetLessons', 'GetReport', 'GetStats', 'GetStatus', 'Health', 'Hello', 'Lessons', 'ListRuns', 'LogsEnd', 'NormalizePlan', 'Normalized', 'Ok', 'PROTOCOL_VERSION', 'PhaseState', 'Reply', 'Report', 'Request', 'Retry', 'RunList', 'RunStatus', 'ServerMessage', 'Stats', 'Submit', 'Submitted', 'Welcome']
