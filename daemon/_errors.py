"""Exceptions of the daemon: every class ``autopack.daemon`` raises on purpose (the
client's are in ``ctl/_errors.py``, the dashboard's in ``web/_exceptions.py``).

Hierarchy::

    AutopackError (autopack.protocol)     errors autopack raises on purpose
    ├── StorageError (autopack.protocol)  a write transaction failed (disk full, I/O)
    ├── ClientError                       the request cannot be served as asked: the client
    │   │                                 gets one line (exit 2 or 1), the daemon serves on
    │   ├── UnknownRun (also LookupError)     no run with that id
    │   ├── AmbiguousRun (also LookupError)   a prefix naming several runs
    │   ├── RetryRefused (also ValueError)    a run that cannot be retried as asked
    │   └── DiffUnavailable (also ValueError) a run with no change to show
    └── DaemonError                       the daemon cannot go on as asked: one line for the
        │                                 operator (start refused, backup not written)
        ├── StateDirBusy                  another process holds the state dir
        ├── SchemaTooNew                  the database was written by a newer autopack
        ├── StoreDamaged                  the database must not be opened
        ├── StoreUnavailable              the store thread is not running
        └── BackupError                   no backup was written

A "bug in autopack" is any exception outside ``AutopackError``: the control server
answers ``internal`` with an error id, the log holds the traceback, the daemon serves on.
"""

from __future__ import annotations

from autopack.protocol import AutopackError

__all__ = [
    "AmbiguousRun", "BackupError", "ClientError", "DaemonError", "DiffUnavailable",
    "RetryRefused", "SchemaTooNew", "StateDirBusy", "StoreDamaged", "StoreUnavailable",
    "UnknownRun",
]


# ------------------------------------------------------------------------ bases
class ClientError(AutopackError):
    """Base of the refusals of requests that cannot be served as asked. Not raised itself."""


class DaemonError(AutopackError):
    """Base of the failures that stop the daemon (or one operator command). Not raised
    itself."""


# ------------------------------------------------------------------------ client
class UnknownRun(ClientError, LookupError):
    """Raised by the store's queries (``daemon._queries``) and :func:`resolve_run_id` when
    a run id is not in the database."""


class AmbiguousRun(ClientError, LookupError):
    """Raised by :func:`resolve_run_id` (``daemon._runops``) when a prefix names more than
    one run; the message lists up to ten."""

    def __init__(self, ref: str, candidates: list[str]) -> None:
        self.ref, self.candidates = ref, candidates
        more = ", ..." if len(candidates) > 10 else ""
        super().__init__(f"run id {ref!r} is ambiguous: {', '.join(candidates[:10])}{more}")


class RetryRefused(ClientError, ValueError):
    """Raised by :func:`plan_retry` (``daemon._runops``) when the run cannot be retried as
    asked (message for the user)."""


class DiffUnavailable(ClientError, ValueError):
    """Raised by :func:`diff` (``daemon._runops``) when the run has no change to show
    (message for the user)."""


# ------------------------------------------------------------------------ daemon
class StateDirBusy(DaemonError):
    """Raised by :func:`lock_state_dir` (``daemon._statedir``) when another process holds
    the state dir."""


class SchemaTooNew(DaemonError):
    """Raised by :func:`migrate` (``daemon._schema``) when the database was written by a
    newer autopack (downgrade is refused)."""


class StoreDamaged(DaemonError):
    """Raised by :func:`check_database` (``daemon._integrity``) when the database must not
    be opened; one line."""


class StoreUnavailable(DaemonError):
    """Raised by :meth:`Store.call` (``daemon._store``) when the store thread is not
    running."""


class BackupError(DaemonError):
    """Raised by :func:`online_backup` (``daemon._integrity``) with one line saying why no
    backup was written."""
