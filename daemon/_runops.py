"""The daemon side of autopackctl's daily commands: run-id lookup, retry and diff.

* :func:`resolve_run_id` turns what a person types into a run id: the full id, any
  unique prefix of it or of its random hex part (as git does with commits), or
  ``latest``. Every request that names a run goes through it (``dispatch`` in
  ``_app``), so every command accepts short ids.
* :func:`insert_retry` creates a run that continues a failed one: same spec and
  repository, its branch starting from the commit of the last phase it keeps; the
  kept phases are recorded as succeeded with that commit, ``reason`` "kept from run
  X", and a ``phase_succeeded`` event with ``kept_from``.
* :func:`diff_base` is the commit a run's change is measured against (for a retry,
  the original run's base, so the kept phases are part of its change).

Store functions (first argument the sqlite connection) run on the store thread.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autopack.actors import _worktree as wt
from autopack.actors._states import TERMINAL_RUN_STATES
from autopack.protocol import Diff, GetDiff, Retry, RunSpec, validate_spec

from . import _queries as q
from ._errors import AmbiguousRun as AmbiguousRun
from ._errors import DiffUnavailable as DiffUnavailable
from ._errors import RetryRefused as RetryRefused
from ._records import new_run_id
from ._store import Store

__all__ = ["AmbiguousRun", "DiffUnavailable", "RetryRefused", "diff", "diff_base", "insert_retry",
           "plan_retry", "resolve_run_id", "retry"]

TERMINAL = TERMINAL_RUN_STATES  # the run engine's one set


def resolve_run_id(conn: sqlite3.Connection, ref: str) -> str:
    """The full id ``ref`` names. Raises :class:`~._queries.UnknownRun` or :class:`AmbiguousRun`."""
    if ref == "latest":
        row = conn.execute("SELECT id FROM runs ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            raise q.UnknownRun("latest (there are no runs yet)")
        return str(row["id"])
    if not ref or conn.execute("SELECT 1 FROM runs WHERE id = ?", (ref,)).fetchone():
        return ref
    like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = conn.execute(
        "SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' OR id LIKE ? ESCAPE '\\' ORDER BY seq DESC",
        (like + "%", "%-" + like + "%")).fetchall()
    found = [str(r["id"]) for r in rows
             if r["id"].startswith(ref) or r["id"].rsplit("-", 1)[-1].startswith(ref)]
    if not found:
        raise q.UnknownRun(ref)
    if len(found) > 1:
        raise AmbiguousRun(ref, found)
    return found[0]


def plan_retry(run: dict[str, Any], from_phase: str | None,
               base: str | None) -> tuple[int, str | None]:
    """Where a retry of ``run`` starts: (index of the first phase to run again, commit the
    new branch starts from: the last kept phase's commit, else ``base``, the run's
    original base). Pure. Raises :class:`RetryRefused` with the reason."""
    if run["state"] not in ("failed", "cancelled"):
        raise RetryRefused(f"run {run['id']} is {run['state']}: only a failed or cancelled "
                           "run can be retried")
    phases = run["phases"]
    ids = [p["id"] for p in phases]
    if from_phase is None:
        start = next((i for i, p in enumerate(phases) if p["state"] != "succeeded"), len(phases))
        if start == len(phases):
            raise RetryRefused(f"every phase of run {run['id']} succeeded: give --from PHASE")
    elif from_phase in ids:
        start = ids.index(from_phase)
    else:
        raise RetryRefused(f"run {run['id']} has no phase {from_phase!r} "
                           f"(phases: {', '.join(ids)})")
    for p in phases[:start]:
        if p["state"] not in ("succeeded", "skipped"):
            raise RetryRefused(f"cannot keep phase {p['id']!r} of run {run['id']}: it is "
                               f"{p['state']}; retry from it or an earlier phase")
    tip = base
    for p in phases[:start]:
        tip = p["commit_sha"] or tip
    return start, tip


def insert_retry(conn: sqlite3.Connection, make_id: Callable[[], str], old: dict[str, Any],
                 spec: RunSpec, start: int, tip: str | None) -> str:
    """Insert the retry of ``old`` (phases before ``start`` kept); returns the new run id."""
    ts = time.time()
    run_id = make_id()
    while conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
        run_id = make_id()
    (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()
    conn.execute(
        "INSERT INTO runs(id, seq, state, goal, repo, base, base_commit, branch, spec, arm,"
        " created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (run_id, seq, "queued", old["goal"], old["repo"], old["base"], tip,
         f"autopack/{run_id}", old["spec"], old["arm"], ts))
    phases = old["phases"]
    conn.executemany(
        "INSERT INTO phases(run_id, idx, id, kind, state) VALUES (?,?,?,?, 'queued')",
        [(run_id, p["idx"], p["id"], p["kind"]) for p in phases[start:]])
    reason = f"kept from run {old['id']}"
    conn.executemany(
        "INSERT INTO phases(run_id, idx, id, kind, state, reason, commit_sha, ended_at)"
        " VALUES (?,?,?,?, 'succeeded', ?,?,?)",
        [(run_id, p["idx"], p["id"], p["kind"], reason, p["commit_sha"], ts)
         for p in phases[:start]])
    q._event(conn, run_id, None, None, "submitted", ts, {
        "repo": old["repo"], "phases": len(phases), "arm": old["arm"], "retry_of": old["id"],
        "from_phase": phases[start]["id"], "base_commit": diff_base(conn, old)})
    for p in phases[:start]:
        q._event(conn, run_id, p["id"], None, "phase_succeeded", ts,
                 {"reason": reason, "commit": p["commit_sha"], "kept_from": old["id"]})
    return run_id


def diff_base(conn: sqlite3.Connection, run: dict[str, Any]) -> str | None:
    """The commit ``run``'s change is measured against: the original base for a retry."""
    row = conn.execute("SELECT payload FROM events WHERE run_id = ? AND kind = 'submitted'"
                       " ORDER BY id LIMIT 1", (run["id"],)).fetchone()
    payload = q.loads(row["payload"]) if row else {}
    if isinstance(payload, dict) and payload.get("retry_of"):
        return str(payload.get("base_commit") or run["base_commit"] or "") or None
    base = run["base_commit"]
    return str(base) if base else None


# ---------------------------------------------------------------- handlers (async shells)
async def retry(store: Store, req: Retry) -> str:
    """Insert the retry ``req`` asks for; returns the new run id (the caller pokes the
    scheduler). Raises :class:`RetryRefused` or :class:`~._queries.UnknownRun`."""
    old = await store.call(q.get_run, req.run_id)
    start, tip = plan_retry(old, req.from_phase, await store.call(diff_base, old))
    spec = validate_spec(q.loads(old["spec"]))
    run_id: str = await store.call(insert_retry, new_run_id, old, spec, start, tip)
    store.notify_changed()
    return run_id


async def diff(store: Store, req: GetDiff) -> Diff:
    """The run's change: ``git diff`` from :func:`diff_base` to its branch tip (or final
    commit once the branch is gone). Raises :class:`DiffUnavailable` when there is
    nothing to compare."""
    run = await store.call(q.get_run, req.run_id)
    base = await store.call(diff_base, run)
    if not base:
        raise DiffUnavailable(f"run {run['id']} has no base commit yet (it has not started)")
    repo = Path(run["repo"])
    if not wt.is_git_repo(repo):
        raise DiffUnavailable(f"{repo} is no longer a git repository")
    try:
        head = await wt.git(repo, "rev-parse", "--verify", "--quiet", run["branch"] + "^{commit}")
    except wt.GitError:
        head = run["final_commit"] or ""
    if not head:
        raise DiffUnavailable(f"the branch {run['branch']} of run {run['id']} no longer exists")
    try:
        stat = await wt.git(repo, "diff", "--stat", base, head)
        patch = await wt.git(repo, "diff", base, head)
    except wt.GitError as exc:
        raise DiffUnavailable(f"cannot diff run {run['id']}: {exc}") from None
    raw = patch.encode("utf-8", "replace")
    truncated = len(raw) > req.max_bytes
    if truncated:
        patch = raw[: req.max_bytes].decode("utf-8", "ignore")
    return Diff(run_id=run["id"], repo=str(repo), base=base, head=head, stat=stat,
                patch=patch + ("\n" if patch else ""), truncated=truncated)
