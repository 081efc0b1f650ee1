"""Storage integrity at start: refuse a database that is damaged or silently empty.

Checked before the store opens the file (plain ``sqlite3``, no trio), with the
state dir already locked:

* a database file that exists but holds no schema (0 bytes, or an empty SQLite
  file) while the state dir shows earlier use (run locks, reports, worktrees)
  means the runs were lost: refused, never started empty;
* a file that is not a database, or fails ``PRAGMA quick_check``: refused.

Each refusal is one line naming the file and the way back: restore a backup
(``autopackctl backup``), or ``autopackd --reset-store`` to move the damaged
file aside and start with an empty one (docs/operations.md).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from ._errors import BackupError as BackupError
from ._errors import StoreDamaged as StoreDamaged

RECOVERY = ("restore it from a backup (autopackctl backup PATH made one), or run "
            "`autopackd --reset-store` to move it aside and start empty (docs/operations.md)")
EVIDENCE_DIRS = ("locks", "reports", "worktrees")
SIDE_FILES = ("-wal", "-shm", "-journal")


def earlier_use(state_dir: Path) -> str | None:
    """What in ``state_dir`` shows that a database with runs was used here (None: nothing)."""
    for name in EVIDENCE_DIRS:
        sub = state_dir / name
        try:
            entries = [e for e in os.listdir(sub) if e != ".pool"]
        except OSError:
            continue
        if entries:
            return f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in {sub}"
    return None


def check_database(db_path: Path, state_dir: Path) -> None:
    """Refuse (raise :class:`StoreDamaged`) a damaged or silently emptied database.

    A missing file is fine (a fresh state dir, or one reset on purpose)."""
    if not db_path.exists():
        return
    size = db_path.stat().st_size
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise StoreDamaged(f"cannot open the database {db_path}: {exc}; {RECOVERY}") from None
    try:
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables == 0:
            evidence = earlier_use(state_dir)
            if evidence is not None:
                raise StoreDamaged(
                    f"the database {db_path} is empty ({size} bytes) but this state dir was "
                    f"used before ({evidence}): its runs would be lost; {RECOVERY}")
            return
        rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as exc:
        raise StoreDamaged(f"the database {db_path} is damaged ({exc}); {RECOVERY}") from None
    finally:
        conn.close()
    if rows != ["ok"]:
        first = "; ".join(str(r) for r in rows[:2])
        raise StoreDamaged(f"the database {db_path} failed its integrity check ({first}); "
                           f"{RECOVERY}")


def move_aside(db_path: Path, now: float | None = None) -> list[Path]:
    """Rename the database and its side files to ``<name>.damaged-<UTC time>``; returns the
    new paths (empty when there was no database)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    moved = []
    for suffix in ("", *SIDE_FILES):
        src = Path(f"{db_path}{suffix}")
        if src.exists():
            dst = Path(f"{db_path}.damaged-{stamp}{suffix}")
            os.replace(src, dst)
            moved.append(dst)
    return moved


def online_backup(db_path: Path, target: Path) -> int:
    """Copy ``db_path`` to ``target`` with SQLite's online backup API; returns its size.

    One backup step over a read-only connection: a consistent snapshot that never
    blocks the daemon's writer (WAL). Written to a hidden partial file, checked with
    ``quick_check``, then linked into place, so ``target`` is never half-written and an
    existing file is never overwritten. Raises :class:`BackupError`."""
    if not target.is_absolute():
        raise BackupError(f"backup path must be absolute, got {target}")
    if target.exists():
        raise BackupError(f"{target} exists; a backup never overwrites a file")
    if not target.parent.is_dir():
        raise BackupError(f"no directory {target.parent} for the backup")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)
                check = dst.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
        if check != "ok":
            raise BackupError(f"the backup failed its integrity check: {check}")
        os.link(partial, target)  # fails rather than replace a file created meanwhile
    except FileExistsError:
        raise BackupError(f"{target} exists; a backup never overwrites a file") from None
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"cannot write the backup {target}: {exc}") from None
    finally:
        try:
            partial.unlink()
        except OSError:
            pass
    return target.stat().st_size
