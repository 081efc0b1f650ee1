"""``debug failpoint``: arm and disarm failpoints in the running daemon (operators, tests).

Allowed only to the daemon's own uid and root, whatever ``allowed_uids``/``allowed_gids``
say: injecting faults is for whoever runs the daemon, not for every user who may submit
runs. A refused or malformed request changes nothing.
"""

from __future__ import annotations

import logging
import os

from autopack.actors import _failpoints as fp
from autopack.protocol import DebugFailpoint, ErrorCode, Failpoints

from ._runs import RequestError

LOGGER = logging.getLogger(__name__)


def debug_failpoint(req: DebugFailpoint, peer_uid: int | None) -> Failpoints:
    """Apply ``req`` (clear, then arm) and answer what is armed. Raises
    :class:`RequestError` (``forbidden``, ``invalid_request``) having changed nothing."""
    if peer_uid not in (0, os.getuid()):
        raise RequestError(ErrorCode.FORBIDDEN, "debug failpoint is allowed only to the "
                           "daemon's own user and root")
    if req.arm.strip():
        try:
            fp.parse(req.arm, source="failpoint")  # all or nothing, before clearing
        except fp.FailpointSyntaxError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from None
    if req.clear:
        fp.clear()
        LOGGER.warning("failpoints cleared (uid %s)", peer_uid)
    if req.arm.strip():
        fp.arm(req.arm)
        LOGGER.warning("failpoints armed (uid %s): %s", peer_uid, req.arm)
    return Failpoints(armed=fp.armed(), fired=fp.fired())
