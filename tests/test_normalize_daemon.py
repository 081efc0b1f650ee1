"""Plans through the daemon and autopackctl: review before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from autopack.protocol import GetHealth, NormalizePlan, RemoteError

from .conftest import make_repo, wait_state

PLANS = Path(__file__).parent / "plans"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "project", {
        "pyproject.toml": '[project]\nname = "shop"\nversion = "0"\n',
        "src/shop/__init__.py": "", "src/shop/cart.py": "def total(items):\n    return 0\n",
        "tests/test_cart.py": "def test_ok():\n    assert True\n"})


def test_daemon_normalizes_without_creating_a_run(daemon, project):
    plan = "# Tidy the shop\n\n1. Run `true` to check the tree\n2. Run `echo done`\n"
    with daemon.client() as c:
        reply = c.request(NormalizePlan(plan=plan, repo=str(project)))
        assert reply.spec["phases"]
        assert 0.0 <= reply.confidence <= 1.0
        assert c.request(GetHealth()).runs == {}  # nothing was submitted
        with pytest.raises(RemoteError) as err:
            c.request(NormalizePlan(plan="", repo=str(project)))
        assert err.value.code == "invalid_plan"
        with pytest.raises(RemoteError) as err:
            c.request(NormalizePlan(plan=plan, repo=str(project.parent)))
        assert "not a git repository" in err.value.message


def test_submit_raw_refuses_without_terminal_and_yes(daemon, project, tmp_path):
    plan = tmp_path / "plan.md"
    plan.write_text("# Check it\n\n- Run `true`\n")
    res = daemon.ctl("submit", "--raw", str(plan), "--repo", str(project))
    assert res.returncode == 2
    assert "unreviewed" in res.stderr
    assert json.loads(daemon.ctl("list", "--json").stdout) == {"runs": []}  # nothing submitted


def test_submit_raw_yes_shows_review_and_runs(daemon, project, tmp_path):
    plan = tmp_path / "plan.md"
    plan.write_text("# Check it\n\n1. Run `ls src`\n2. Run `test -f pyproject.toml`\n")
    res = daemon.ctl("submit", "--raw", str(plan), "--repo", str(project), "--yes", "--json")
    assert res.returncode == 0, res.stderr
    assert "confidence" in res.stderr  # the review is shown even with --yes
    run_id = json.loads(res.stdout)["run_id"]
    assert wait_state(daemon, run_id).state == "succeeded"


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_normalized_spec_round_trips_into_submit(daemon, project, tmp_path, suffix):
    out = tmp_path / f"spec{suffix}"
    plan = tmp_path / "plan.md"
    plan.write_text("# Check the tree\n\n1. Run `ls src/shop`\n2. Run `ls src`\n")
    res = daemon.ctl("normalize", str(plan), "--repo", str(project), "-o", str(out))
    assert res.returncode == 0, res.stderr
    sub = daemon.ctl("submit", str(out), "--repo", str(project), "--json")
    assert sub.returncode == 0, sub.stderr
    assert wait_state(daemon, json.loads(sub.stdout)["run_id"]).state == "succeeded"


@pytest.mark.parametrize(("content", "needle"), [
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"\x00\x01\x02binary\xff", "binary", id="binary"),
    pytest.param(b"- buy milk\n- call mom\n", "nothing actionable", id="nothing"),
])
def test_submit_raw_bad_plans_exit_2_and_submit_nothing(daemon, project, tmp_path, content, needle):
    plan = tmp_path / "plan.md"
    plan.write_bytes(content)
    res = daemon.ctl("submit", "--raw", str(plan), "--repo", str(project), "--yes")
    assert res.returncode == 2
    assert needle in res.stderr.lower()
    assert len(res.stderr.strip().splitlines()) == 1
    assert json.loads(daemon.ctl("list", "--json").stdout) == {"runs": []}


def test_plain_unix_commands_in_backticks_are_checks(project):
    from autopack.actors._normalize import normalize_plan

    result = normalize_plan("# Check it\n\n1. Run `true`\n2. Run `test -f pyproject.toml`\n",
                            project)
    assert [p.kind for p in result.spec.phases] == ["command", "command"]
    assert [p.checks for p in result.spec.phases] == [["true"], ["test -f pyproject.toml"]]
    # but bare prose is not a command
    vague = normalize_plan("# Tests\n\n1. Run test suite and fix what fails\n", project)
    assert vague.spec.phases[0].checks != ["test suite and fix what fails"]
