"""The classifier actor over real memory channels."""

from __future__ import annotations

import anyio
from autopack.actors.classifier import ClassifierActor, request_classification


async def test_actor_answers_small_and_big_requests_and_counts() -> None:
    actor, mailbox = ClassifierActor.open(thread_threshold=1024)
    async with anyio.create_task_group() as tg:
        await tg.start(actor.serve)
        async with mailbox:
            small = await request_classification(mailbox, "ModuleNotFoundError: No module named 'yaml'\n", 1)
            big = ("noise line\n" * 5000) + "bash: line 1: ruff: command not found\n"
            large = await request_classification(mailbox, big.encode(), 127)
            none = await request_classification(mailbox, "boom\n", 1)
    assert (small.pattern, large.pattern, none.pattern) == ("python_missing_dep", "missing_command", None)
    st = actor.statistics()
    assert (st.requests, st.classified, st.unclassified, st.last_error) == (3, 2, 1, None)
