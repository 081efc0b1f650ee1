"""The supervisor: one-for-one restarts, and giving up after R crashes in T seconds."""

from __future__ import annotations

import anyio
import pytest
import trio
import trio.testing
from autopack.daemon._supervisor import Supervisor, SupervisorGaveUp


class Flaky:
    """A child that crashes its first ``crashes`` starts, then serves forever."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.starts = 0
        self.up = trio.Event()

    async def serve(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        self.starts += 1
        task_status.started()
        if self.starts <= self.crashes:
            raise RuntimeError(f"crash #{self.starts}")
        self.up.set()
        await trio.sleep_forever()


async def test_crashed_child_is_restarted_and_siblings_untouched(autojump_clock):
    sup = Supervisor(limit=5, window_s=60)
    flaky, steady = Flaky(crashes=2), Flaky(crashes=0)
    async with trio.open_nursery() as nursery:
        await sup.start_child(nursery, "steady", steady.serve)
        await sup.start_child(nursery, "flaky", flaky.serve)
        await flaky.up.wait()
        await trio.testing.wait_all_tasks_blocked()
        stats = {c.name: c for c in sup.statistics()}
        assert stats["flaky"].restarts == 2
        assert stats["flaky"].state == "up"
        assert "crash #2" in stats["flaky"].last_error
        assert steady.starts == 1  # one-for-one: the sibling was never restarted
        nursery.cancel_scope.cancel()


async def test_too_many_crashes_in_the_window_gives_up(autojump_clock):
    sup = Supervisor(limit=3, window_s=60)
    always = Flaky(crashes=10**6)
    with pytest.RaisesGroup(SupervisorGaveUp, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await sup.start_child(nursery, "doomed", always.serve)
            await trio.sleep_forever()
    assert always.starts == 4  # limit 3: the fourth crash within the window gives up


async def test_crashes_spread_over_time_are_forgiven(autojump_clock):
    sup = Supervisor(limit=2, window_s=1.0, max_backoff=0.1)
    slow = Flaky(crashes=0)

    class EverySecond(Flaky):
        async def serve(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
            self.starts += 1
            task_status.started()
            await trio.sleep(2.0)  # lives 2 s, then crashes: never 3 crashes within 1 s
            if self.starts < 6:
                raise RuntimeError("periodic")
            self.up.set()
            await trio.sleep_forever()

    periodic = EverySecond(crashes=0)
    async with trio.open_nursery() as nursery:
        await sup.start_child(nursery, "slow", slow.serve)
        await sup.start_child(nursery, "periodic", periodic.serve)
        await periodic.up.wait()
        assert {c.name: c.restarts for c in sup.statistics()}["periodic"] == 5
        nursery.cancel_scope.cancel()


async def test_degradable_child_never_makes_the_daemon_give_up(autojump_clock):
    sup = Supervisor(limit=1, window_s=60, max_backoff=0.5)
    memory = Flaky(crashes=8)
    async with trio.open_nursery() as nursery:
        await sup.start_child(nursery, "memory", memory.serve, degradable=True)
        await memory.up.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert {c.name: c.restarts for c in sup.statistics()}["memory"] == 8
        nursery.cancel_scope.cancel()


async def test_intensity_is_counted_per_child(autojump_clock):
    """OTP intensity per child: two children crashing 3 times each within the window do not
    add up to the limit of 4; a single child passing it gives up, naming itself."""
    sup = Supervisor(limit=3, window_s=10.0, max_backoff=0.1)
    a, b = Flaky(crashes=3), Flaky(crashes=3)
    async with trio.open_nursery() as nursery:
        await sup.start_child(nursery, "a", a.serve)
        await sup.start_child(nursery, "b", b.serve)
        await a.up.wait()
        await b.up.wait()
        stats = {c.name: c for c in sup.statistics()}
        assert (stats["a"].restarts, stats["b"].restarts) == (3, 3)
        assert stats["a"].recent_restarts == 3
        assert (stats["a"].limit, stats["a"].window_s) == (3, 10.0)
        await trio.sleep(11)  # the window slides past the crashes
        assert {c.name: c.recent_restarts for c in sup.statistics()} == {"a": 0, "b": 0}
        nursery.cancel_scope.cancel()
    doomed = Flaky(crashes=4)
    with pytest.RaisesGroup(pytest.RaisesExc(SupervisorGaveUp, match=r"actor doomed crashed 4 "
                                             r"times within 10 s \(restart_limit 3"),
                            flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await sup.start_child(nursery, "doomed", doomed.serve)
            await trio.sleep_forever()
    assert {c.name: c.state for c in sup.statistics()}["doomed"] == "failed"


async def test_exactly_the_limit_within_the_window_is_survived(autojump_clock):
    sup = Supervisor(limit=5, window_s=60.0, max_backoff=0.1)
    five = Flaky(crashes=5)
    async with trio.open_nursery() as nursery:
        await sup.start_child(nursery, "five", five.serve)
        await five.up.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert {c.name: c.state for c in sup.statistics()}["five"] == "up"
        nursery.cancel_scope.cancel()


async def test_a_limit_changed_live_applies_to_the_next_crash(autojump_clock):
    sup = Supervisor(limit=10, window_s=60.0, max_backoff=0.1)
    flaky = Flaky(crashes=10**6)
    with pytest.RaisesGroup(SupervisorGaveUp, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await sup.start_child(nursery, "flaky", flaky.serve)
            while flaky.starts < 3:
                await trio.testing.wait_all_tasks_blocked()  # the next (re)start  # noqa: ASYNC110
                await trio.sleep(0.05)
            sup.limit = 2  # a reload lowered it: the next crash is one too many
            await trio.sleep_forever()
    assert flaky.starts == 4  # 3 crashes under the old limit; the 4th is past the new one
