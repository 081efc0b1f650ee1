"""Failpoints: the syntax, counts, and that an unset failpoint costs nothing observable."""

from __future__ import annotations

import pytest
import trio
from autopack.actors import _failpoints as fp


@pytest.fixture(autouse=True)
def _disarmed():
    fp.clear()
    yield
    fp.clear()


@pytest.mark.parametrize(("text", "armed"), [
    pytest.param("classifier.classify=panic", {"classifier.classify": "panic"}, id="panic"),
    pytest.param("memory.context_for=sleep(5s)", {"memory.context_for": "sleep(5s)"}, id="sleep"),
    pytest.param("memory.context_for=sleep(250ms)", {"memory.context_for": "sleep(0.25s)"},
                 id="sleep-ms"),
    pytest.param("classifier.classify=3*panic;memory.lessons=error",
                 {"classifier.classify": "3*panic", "memory.lessons": "error"}, id="two"),
    pytest.param(" classifier.classify = every(3)*panic ; ",
                 {"classifier.classify": "every(3)*panic"}, id="every-spaces"),
    pytest.param("request.status=2*every(2)*error", {"request.status": "2*every(2)*error"},
                 id="request-tag"),
    pytest.param("classifier.classify=panic;classifier.classify=off", {}, id="off-last-wins"),
    pytest.param("", {}, id="empty"),
])
def test_configure_arms_what_the_variable_says(text, armed):
    fp.configure({fp.ENV: text})
    assert fp.armed() == armed


@pytest.mark.parametrize(("text", "needle"), [
    pytest.param("classifier.clasify=panic", "unknown failpoint 'classifier.clasify'", id="name"),
    pytest.param("request.nosuch=panic", "unknown failpoint 'request.nosuch'", id="tag"),
    pytest.param("classifier.classify", "expected NAME=ACTION", id="no-equals"),
    pytest.param("classifier.classify=explode", "unknown action 'explode'", id="action"),
    pytest.param("classifier.classify=sleep(5)", "bad duration '5'", id="no-unit"),
    pytest.param("classifier.classify=sleep", "only sleep takes an argument", id="sleep-no-arg"),
    pytest.param("classifier.classify=panic(1)", "only sleep takes an argument", id="arg"),
    pytest.param("classifier.classify=0*panic", "counts must be >= 1", id="zero"),
    pytest.param("classifier.classify=x*panic", "cannot read", id="bad-count"),
])
def test_bad_values_are_one_line_errors(text, needle):
    with pytest.raises(fp.FailpointSyntaxError) as err:
        fp.configure({fp.ENV: text})
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_arm_is_all_or_nothing():
    fp.arm("classifier.classify=panic")
    with pytest.raises(fp.FailpointSyntaxError):
        fp.arm("memory.lessons=error;nope=panic")
    assert fp.armed() == {"classifier.classify": "panic"}


def test_counts_and_every_fire_where_they_say():
    fp.arm("memory.lessons=2*every(3)*panic")
    fired = []
    for i in range(1, 13):
        try:
            fp.hit("memory.lessons")
        except fp.FailpointPanic:
            fired.append(i)
    assert fired == [3, 6]
    assert fp.armed() == {}  # spent: disarmed


def test_error_and_off():
    fp.arm("memory.lessons=error")
    with pytest.raises(fp.FailpointError, match="failpoint memory.lessons fired"):
        fp.hit("memory.lessons")
    fp.arm("memory.lessons=off")
    fp.hit("memory.lessons")
    assert fp.armed() == {}


async def test_async_sleep_does_not_block_the_loop(autojump_clock):
    fp.arm("classifier.classify=1*sleep(2s)")
    start = trio.current_time()
    await fp.hit_async("classifier.classify")
    assert trio.current_time() - start == pytest.approx(2)
    await fp.hit_async("classifier.classify")  # spent
    assert trio.current_time() - start == pytest.approx(2)


def test_every_name_in_the_docs():
    """docs/operations.md lists every failpoint (the operator's reference)."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "operations.md").read_text()
    for name in fp.NAMES:
        assert f"`{name}`" in text, name


def test_debug_failpoint_is_refused_to_other_uids_and_changes_nothing():
    import os

    from autopack.daemon._debug import debug_failpoint
    from autopack.daemon._runs import RequestError
    from autopack.protocol import DebugFailpoint

    other = os.getuid() + 1 if os.getuid() else 65534
    with pytest.raises(RequestError) as err:
        debug_failpoint(DebugFailpoint(arm="classifier.classify=panic"), other)
    assert err.value.code == "forbidden"
    assert fp.armed() == {}
    assert debug_failpoint(DebugFailpoint(arm="classifier.classify=panic"),
                           os.getuid()).armed == {"classifier.classify": "panic"}
