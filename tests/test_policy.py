"""The failure decision table."""

from __future__ import annotations

import pytest
from autopack.actors._engine import FailureFacts, Next, decide


def facts(**kw):
    base = dict(kind="build", pattern=None, mitigation_kind=None, auto_allowed=False,
                already_done=False, attempt=1, max_attempts=3, same_as_previous=False,
                llm_available=True, doctor_left_phase=2, doctor_left_run=6)
    base.update(kw)
    return FailureFacts(**base)


@pytest.mark.parametrize(("kw", "expected", "needle"), [
    pytest.param(dict(pattern="python_missing_dep", mitigation_kind="install_dependency",
                      auto_allowed=True), Next.MITIGATE, "safe action", id="auto-install"),
    pytest.param(dict(pattern="python_missing_dep", mitigation_kind="install_dependency",
                      auto_allowed=True, already_done=True), Next.RETRY, "hint",
                 id="installed-once-already"),
    pytest.param(dict(pattern="python_missing_dep", mitigation_kind="install_dependency",
                      auto_allowed=False), Next.RETRY, "hint", id="not-allowed-to-act"),
    pytest.param(dict(pattern="test_failure", mitigation_kind="hint"), Next.RETRY, "hint",
                 id="builder-retry-no-doctor"),
    pytest.param(dict(pattern="test_failure", mitigation_kind="hint", same_as_previous=True),
                 Next.FAIL, "stuck", id="stuck"),
    pytest.param(dict(pattern="test_failure", attempt=3), Next.FAIL, "attempt limit", id="limit"),
    pytest.param(dict(kind="command", pattern="test_failure"), Next.FAIL, "check failed",
                 id="command-deterministic"),
    pytest.param(dict(kind="command", pattern="network_timeout", mitigation_kind="hint"),
                 Next.RETRY, "transient", id="command-transient"),
    pytest.param(dict(kind="command", pattern="rate_limited", mitigation_kind="wait",
                      auto_allowed=True), Next.MITIGATE, "safe", id="wait-rate-limit"),
    pytest.param(dict(), Next.DOCTOR, "Doctor", id="unknown-doctor"),
    pytest.param(dict(doctor_left_phase=0), Next.RETRY, "no Doctor calls left", id="doctor-limit"),
    pytest.param(dict(llm_available=False), Next.RETRY, "no Doctor", id="no-llm-build"),
    pytest.param(dict(kind="command", llm_available=False), Next.FAIL, "unclassified",
                 id="no-llm-command"),
    pytest.param(dict(same_as_previous=True), Next.FAIL, "stuck", id="stuck-unclassified"),
    pytest.param(dict(attempt=3), Next.FAIL, "attempt limit", id="limit-unclassified"),
])
def test_decide(kw, expected, needle):
    step, reason = decide(facts(**kw))
    assert step is expected
    assert needle in reason


def test_signature_masks_durations_addresses_and_times():
    from autopack.protocol import Classification

    def sig(*lines):
        return Classification(pattern="test_failure", evidence=list(lines)).signature

    assert sig("1 failed, 2 passed in 0.60s") == sig("1 failed, 2 passed in 0.63s")
    assert sig("<obj at 0x7f00aa>") == sig("<obj at 0x7f11bb>")
    assert sig("2026-11-25 17:00:01 boom") == sig("2026-11-25 18:12:59 boom")
    assert sig("1 failed") != sig("2 failed")  # a different failure stays different
