"""The classifier actor over real memory channels: answers, and survives its own crashes."""

from __future__ import annotations

import anyio
import pytest
import trio
import trio.testing
from autopack.actors import _failpoints as fp
from autopack.actors.classifier import ClassifierActor
from autopack.daemon._supervisor import Supervisor

MISSING = "ModuleNotFoundError: No module named 'yaml'\n"


@pytest.fixture(autouse=True)
def _disarmed():
    fp.clear()
    yield
    fp.clear()


async def test_actor_answers_small_and_big_requests_and_counts() -> None:
    actor = ClassifierActor(thread_threshold=1024)
    client = actor.client()
    async with anyio.create_task_group() as tg:
        await tg.start(actor.serve)
        small = await client.classify(MISSING, 1)
        big = ("noise line\n" * 5000) + "bash: line 1: ruff: command not found\n"
        large = await client.classify(big.encode(), 127)
        none = await client.classify("boom\n", 1)
        tg.cancel_scope.cancel()
    assert (small.pattern, large.pattern, none.pattern) == ("python_missing_dep", "missing_command", None)
    st = actor.statistics()
    assert (st.requests, st.classified, st.unclassified, st.last_error) == (3, 2, 1, None)
    assert st.state == "down"  # cancelled: not serving any more


async def test_a_crash_answers_unclassified_and_a_restart_serves_again(autojump_clock) -> None:
    """Was: ``async with self._receive`` closed the mailbox on the first exit, so the restarted
    actor crashed at once, again and again, and the daemon gave up about a second later."""
    fp.arm("classifier.classify=every(3)*panic")
    actor = ClassifierActor()
    client = actor.client()
    sup = Supervisor(limit=100, window_s=60)
    answers = []
    async with trio.open_nursery() as nursery:
        await sup.start_child(nursery, "classifier", actor.serve)
        for _ in range(9):
            answers.append(await client.classify(MISSING, 1))
        nursery.cancel_scope.cancel()
    patterns = [a.pattern for a in answers]
    assert patterns == ["python_missing_dep", "python_missing_dep", None] * 3
    crashed = [a for a in answers if a.pattern is None]
    assert all("crashed" in a.details["classifier_error"] for a in crashed)
    assert {c.name: c.restarts for c in sup.statistics()} == {"classifier": 3}
    assert actor.statistics().restarts == 2  # the third restart was still in its backoff
    assert actor.statistics().unanswered == 3


async def test_requests_queued_at_a_crash_are_all_answered_at_once(autojump_clock) -> None:
    """The request in hand and the ones behind it get "unclassified" when the actor dies,
    without waiting for their deadline."""
    fp.arm("classifier.classify=1*sleep(1s);classifier.classify=1*sleep(1s)")
    actor = ClassifierActor()
    client = actor.client()
    answers: list = []
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as serving:
            await serving.start(actor.serve)

            async def ask() -> None:
                answers.append(await client.classify(MISSING, 1, timeout_s=30))

            for _ in range(4):
                outer.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            serving.cancel_scope.cancel()  # the actor ends while holding one, three queued
        await trio.testing.wait_all_tasks_blocked()
    assert len(answers) == 4
    assert trio.current_time() - start < 1
    assert all(a.pattern is None and "classifier_error" in a.details for a in answers)


async def test_a_caller_never_waits_past_its_deadline_for_a_dead_actor(autojump_clock) -> None:
    actor = ClassifierActor()  # never started
    start = trio.current_time()
    answer = await actor.client().classify(MISSING, 1, timeout_s=2)
    assert answer.pattern is None
    assert "no answer within 2 s" in answer.details["classifier_error"]
    assert trio.current_time() - start == pytest.approx(2)


async def test_a_caller_waits_for_a_restarting_actor_within_its_deadline(autojump_clock) -> None:
    actor = ClassifierActor()
    client = actor.client()
    async with trio.open_nursery() as nursery:
        answer: list = []

        async def ask() -> None:
            answer.append(await client.classify(MISSING, 1, timeout_s=5))

        nursery.start_soon(ask)
        await trio.sleep(1)  # down for a second, then up
        await nursery.start(actor.serve)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert answer[0].pattern == "python_missing_dep"


async def test_an_error_failpoint_answers_unclassified_and_the_actor_lives(autojump_clock) -> None:
    fp.arm("classifier.classify=2*error")
    actor = ClassifierActor()
    client = actor.client()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.serve)
        first = await client.classify(MISSING, 1)
        second = await client.classify(MISSING, 1)
        third = await client.classify(MISSING, 1)
        nursery.cancel_scope.cancel()
    assert (first.pattern, second.pattern, third.pattern) == (None, None, "python_missing_dep")
    assert "FailpointError" in first.details["classifier_error"]
    assert actor.statistics().restarts == 0
