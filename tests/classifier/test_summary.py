"""Test runners' closing summaries, parsed from real captured output (fixtures/summaries/capture.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest
from autopack.actors.classifier import TestSummary, parse_test_summary
from autopack.actors.classifier._summary import plain_text

HERE = Path(__file__).resolve().parent.parent / "fixtures" / "summaries"
CASES = tomllib.loads((HERE / "manifest.toml").read_text())["case"]


def _expected(entry: dict[str, object]) -> TestSummary | None:
    if entry["runner"] == "none":
        return None

    def count(key: str) -> int | None:
        v = entry[key]
        return None if v == "unknown" else int(str(v))

    return TestSummary(str(entry["runner"]), int(str(entry["ran"])), count("passed"), count("failed"), count("skipped"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_captured_summary(name: str) -> None:
    output = (HERE / f"{name}.log").read_bytes().decode("utf-8", "replace")
    assert parse_test_summary(output) == _expected(CASES[name]), CASES[name]["command"]


def test_the_captures_cover_every_runner_and_zero_test_runs() -> None:
    runners = {str(e["runner"]) for e in CASES.values()}
    assert {"pytest", "unittest", "cargo", "go", "node", "jest", "vitest", "mocha", "surefire", "mixed", "none"} <= runners
    zero = {str(e["runner"]) for e in CASES.values() if e.get("ran") == 0}
    assert {"pytest", "unittest", "cargo", "go", "node", "jest", "vitest", "mocha"} <= zero
    # runs that exited 0 yet ran nothing: the case the summary exists for
    assert sum(1 for e in CASES.values() if e.get("ran") == 0 and e["exit_code"] == 0) >= 6


def test_summary_is_a_frozen_struct_that_round_trips() -> None:
    s = TestSummary("pytest", 3, 2, 1, None)
    with pytest.raises(AttributeError):
        s.ran = 4  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(s), type=TestSummary) == s


def test_a_summary_quoted_mid_line_or_as_prose_is_not_one() -> None:
    assert parse_test_summary("log: Ran 3 tests in 0.1s\nall good\n") is None
    assert parse_test_summary("the job passed in 3.2s and 2 failed in the past\n") is None
    assert parse_test_summary("print('test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out')\n") is None
    assert parse_test_summary("") is None


def test_colour_and_carriage_return_progress_do_not_hide_a_summary() -> None:
    text = "collecting ... \rcollected 3 items\r\n\x1b[32m\x1b[1m3 passed\x1b[0m\x1b[32m in 0.02s\x1b[0m\r\n"
    assert parse_test_summary(text) == TestSummary("pytest", 3, 3, 0, 0)
    assert plain_text("a\x1b[31mb\x1b[0m\rc\n10%\r50%\r100%\n") == "c\n100%\n"


def test_summaries_of_different_runners_are_summed_as_mixed() -> None:
    cargo = (HERE / "cargo_mix.log").read_text()
    jest = (HERE / "jest_mix.log").read_text()
    s = parse_test_summary(cargo + "\n" + jest)
    assert s == TestSummary("mixed", 8, 6, 2, 2)
