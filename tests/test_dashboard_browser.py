"""The dashboard in a real headless browser (Debian's chromium driven by Playwright).

Runs in several states on a real daemon — succeeded, failed, a classifier-mitigated
failure (a missing module installed into the run's venv), and a running run held at a
gate file — then: the list, a filter, the detail page of the mitigated run, the running
run advancing on both pages without a reload, the pages with JavaScript off, a phone's
width, and no CSP violation in the console. Screenshots go to the test's tmp dir (the
path is printed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_repo, require_system, wait_state, write_spec
from .test_hardening import MODULE, hardened_daemon, wheelhouse  # noqa: F401 (fixture)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_system("chromium", "chromium")
    from playwright.sync_api import sync_playwright  # the test extra: never skipped

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def submit(d: Any, spec: Path, repo: Path) -> str:
    res = d.ctl("submit", str(spec), "--repo", str(repo), "--json")
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["run_id"])


@pytest.fixture
def scene(daemon_factory, wheelhouse, tmp_path: Path) -> dict[str, Any]:  # noqa: F811
    d = hardened_daemon(daemon_factory, wheelhouse)
    repo = make_repo(tmp_path / "shop", {"pyproject.toml": '[project]\nname = "x"\nversion = "0"\n'})
    other = make_repo(tmp_path / "billing")
    runs = {
        "ok": submit(d, write_spec(tmp_path / "ok.json", [
            {"id": "lint", "goal": "lint", "kind": "command", "checks": ["true"]},
            {"id": "test", "goal": "test", "kind": "command", "checks": ["true"]}],
            goal="Check the billing repository builds"), other),
        "failed": submit(d, write_spec(tmp_path / "bad.json", [
            {"id": "unit", "goal": "unit tests", "kind": "command",
             "checks": ["echo 'AssertionError: 2 != 3' >&2; exit 1"]}],
            goal="Run the unit tests of billing"), other),
        "mitigated": submit(d, write_spec(tmp_path / "dep.json", [
            {"id": "use-dep", "goal": "use the dependency", "kind": "command",
             "checks": [f"python -c 'import {MODULE}; assert {MODULE}.VALUE == 42'"]}],
            goal="Import the missing dependency (the classifier installs it)"), repo),
    }
    for rid in runs.values():
        wait_state(d, rid, timeout=120)
    runs["running"] = submit(d, write_spec(tmp_path / "slow.json", [
        {"id": "prepare", "goal": "prepare", "kind": "command", "checks": ["true"]},
        {"id": "wait-for-gate", "goal": "wait", "kind": "command",
         # the gate is a file in the run's worktree (checks run in a sandbox with a private
         # /tmp, so the test's tmp dir is not visible to them)
         "checks": ["while [ ! -f .gate ]; do sleep 0.1; done"]},
        {"id": "finish", "goal": "finish", "kind": "command", "checks": ["true"]}],
        goal="A long run that waits for a gate file"), repo)
    wait_state(d, runs["running"], states=("running",))
    gate = d.state_dir / "worktrees" / runs["running"] / ".gate"
    return {"daemon": d, "runs": runs, "gate": gate, "repo": repo}


def shot(page: Any, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_dashboard_in_a_real_browser(browser, scene, tmp_path: Path):
    d, runs = scene["daemon"], scene["runs"]
    url = d.health_url
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = ctx.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # the list: every run, its state, newest first; live connected
    page.goto(url + "/")
    rows = page.locator("#runs tbody tr[data-seq]")
    assert rows.count() == 4
    assert rows.first.get_attribute("id") == f"run-{runs['running']}"
    for key, state in (("ok", "succeeded"), ("failed", "failed"), ("mitigated", "succeeded"),
                       ("running", "running")):
        assert page.locator(f"#run-{runs[key]} .badge").first.inner_text() == state
    page.wait_for_selector("#live:not([hidden])")
    shot(page, tmp_path, "list")

    # the running run advances without a reload (the marker survives: same document)
    page.evaluate("window.__noReload = 42")
    scene["gate"].write_text("go")
    page.wait_for_selector(f"#run-{runs['running']} .badge.s-succeeded", timeout=60_000)
    assert page.evaluate("window.__noReload") == 42
    assert "3/3" in page.locator(f"#run-{runs['running']}").inner_text()

    # filter by state, then by repository
    page.select_option("select[name=state]", "failed")
    page.click("button[type=submit]")
    page.wait_for_url("**/?state=failed**")
    assert page.locator("#runs tbody tr[data-seq]").count() == 1
    assert page.locator(f"#run-{runs['failed']}").count() == 1
    page.goto(url + "/")
    page.select_option("select[name=repo]", str(scene["repo"].resolve()))
    page.fill("input[name=q]", "dependency")
    page.click("button[type=submit]")
    assert [r.get_attribute("id") for r in page.locator("#runs tbody tr[data-seq]").all()] == [
        f"run-{runs['mitigated']}"]

    # the mitigated run: pattern, evidence, mitigation, expandable check output
    page.click(f"#run-{runs['mitigated']} a")
    page.wait_for_url(f"**/runs/{runs['mitigated']}")
    body = page.locator("#run-body")
    assert "python_missing_dep" in body.inner_text()
    assert f"No module named '{MODULE}'" in page.locator("pre.evidence").first.inner_text()
    assert "install_dependency" in page.locator(".mitigation").first.inner_text()
    assert page.locator("svg.gantt rect.bar").count() >= 1
    failed_check = page.locator("details.check.bad").first
    assert not failed_check.evaluate("d => d.open")
    failed_check.locator("summary").click()
    assert failed_check.locator("pre.tail").is_visible()
    assert "ModuleNotFoundError" in failed_check.locator("pre.tail").inner_text()
    shot(page, tmp_path, "detail")
    report = ctx.request.get(f"{url}/runs/{runs['mitigated']}/report.json")
    assert report.ok
    assert report.json()["state"] == "succeeded"
    assert not problems, problems
    ctx.close()


def test_detail_advances_live_and_pages_work_without_javascript(browser, scene, tmp_path):
    d, runs = scene["daemon"], scene["runs"]
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(f"{d.health_url}/runs/{runs['running']}")
    page.wait_for_selector("#live:not([hidden])")
    assert "wait-for-gate" in page.locator("#run-body").inner_text()
    page.evaluate("window.__noReload = 7")
    scene["gate"].write_text("go")
    page.wait_for_selector("h1 .badge.s-succeeded", timeout=60_000)
    page.wait_for_selector("#phase-finish .badge.s-succeeded", timeout=30_000)
    assert page.evaluate("window.__noReload") == 7
    assert not problems, problems
    ctx.close()

    # JavaScript off: the server-rendered pages show everything
    off = browser.new_context(java_script_enabled=False)
    page = off.new_page()
    page.goto(d.health_url + "/")
    assert page.locator("#runs tbody tr[data-seq]").count() == 4
    page.goto(f"{d.health_url}/runs/{runs['mitigated']}")
    assert "python_missing_dep" in page.locator("#run-body").inner_text()
    page.goto(d.health_url + "/overview")
    assert page.locator("h2", has_text="Supervised parts").count() == 1
    off.close()

    # a phone: no horizontal scrolling, every run readable; dark theme from the system
    phone = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                is_mobile=True, has_touch=True, device_scale_factor=2)
    page = phone.new_page()
    page.goto(d.health_url + "/")
    assert page.evaluate("document.documentElement.scrollWidth <= 391")
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(15, 17, 21)", bg  # the dark palette
    shot(page, tmp_path, "list-phone-dark")
    page.goto(f"{d.health_url}/runs/{runs['mitigated']}")
    assert page.evaluate("document.documentElement.scrollWidth <= 391")
    shot(page, tmp_path, "detail-phone-dark")
    phone.close()
