"""One state dir, one daemon: an exclusive lock on the state directory itself.

The lock is ``flock(LOCK_EX)`` on a file descriptor of the directory (no lock
file to go stale): the kernel frees it when the daemon exits, however it
exits. A second daemon on the same directory is refused before it touches
anything; the holder's pid is read from ``/proc/locks`` for the message.
Because only the lock holder ever reconciles, the process groups it finds
recorded were left by a daemon that is really gone.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ._errors import StateDirBusy as StateDirBusy


class StateDirLock:
    """The held lock. ``release()`` frees it (idempotent); so does process exit."""

    def __init__(self, path: Path, fd: int, created: bool) -> None:
        self.path, self.fd, self.created = path, fd, created

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def lock_state_dir(path: Path) -> StateDirLock:
    """Create ``path`` if needed (mode 0700) and lock it exclusively.

    Raises :class:`StateDirBusy` (another daemon holds it) or ``OSError`` (cannot create
    or open it). ``created`` on the result says whether this call made the directory, so
    a start that fails can remove it again."""
    created = False
    if not path.exists():
        path.mkdir(mode=0o700, parents=True)
        created = True
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(fd)
        os.close(fd)
        who = f"pid {holder}" if holder else "another process"
        raise StateDirBusy(f"state dir {path} is in use by another autopackd ({who}); "
                           "one state dir serves one daemon") from None
    except BaseException:
        os.close(fd)
        raise
    return StateDirLock(path, fd, created)


def lock_holder(fd: int) -> int | None:
    """The pid holding a flock on ``fd``'s inode, from ``/proc/locks`` (None if unknown)."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            for line in fh:
                fields = line.split()
                if "->" in fields:  # a waiter, not the holder
                    continue
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
                    return int(fields[4]) if fields[4].isdigit() else None
    except OSError:
        return None
    return None
