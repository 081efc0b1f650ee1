"""``python -m autopack.testing --scenario FILE [--port N] [--host H]``: the scripted
Messages API server as a process; prints its URL, serves until SIGINT/SIGTERM."""

import sys

from ._modelserver import main

sys.exit(main())
