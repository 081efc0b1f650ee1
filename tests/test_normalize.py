"""Plan normalization: real-looking plans (tests/plans/) against small real git repos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from autopack.actors._normalize import (
    NormalizeResult,
    PlanError,
    normalize_file,
    normalize_plan,
    normalize_result_json,
    result_from_raw_spec,
)
from autopack.protocol import SpecError, load_spec, spec_to_builtins, spec_to_toml, validate_spec
from autopack.protocol._spec import PHASE_ID_RE

from .test_toolchain import make_repo

PLANS = Path(__file__).parent / "plans"

SHOP = {
    "pyproject.toml": '[project]\nname = "shop"\nversion = "1"\n'
                      '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
    "Makefile": "test:\n\tpython -m pytest -q\n",
    "README.md": "# shop\n",
    "src/shop/__init__.py": "",
    "src/shop/models.py": "class Order:\n    pass\n",
    "src/shop/config.py": "",
    "src/shop/users.py": "",
    "src/shop/api/__init__.py": "",
    "src/shop/api/routes.py": "",
    "src/shop/api/users.py": "",
    "src/shop/api/orders.py": "",
    "tests/test_users.py": "",
    "tests/test_config.py": "",
    "tests/test_models.py": "",
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("shop") / "shop", SHOP)


def _phases(r: NormalizeResult) -> list[tuple[str, str, list[str], list[str]]]:
    return [(p.id, p.kind, p.scope, p.checks) for p in r.spec.phases]


PYTEST = "python -m pytest -q"  # the shop repo's default check (Python beats its Makefile)

CASES = [
    pytest.param("explicit.md", [
        ("add-endpoint", "build",
         ["src/shop/api/health.py", "src/shop/api/routes.py", "tests/test_health.py"],
         ["pytest -q tests/test_health.py"]),
        ("document", "build", ["README.md"], ["pytest -q"]),
        ("run-full-test-suite", "command", [], ["pytest -q"]),
    ], {"constraints": ["keep the public API unchanged", "no new dependencies"],
        "non_goals": ["authentication for the endpoint"]}, id="markdown-explicit"),
    pytest.param("vague.txt", [
        ("improve-users-handling", "build",
         ["src/shop/api/users.py", "src/shop/users.py", "tests/test_users.py"], [PYTEST]),
        ("clean-up-stuff", "build", ["src/**", "tests/**"], [PYTEST]),
        ("make-faster", "build", ["src/**", "tests/**"], [PYTEST]),
    ], {"goal": "make the app better"}, id="plain-vague"),
    pytest.param("steps_plain.txt", [
        ("add-toml-loader-reads", "build", ["src/shop/config.py", "**/settings.toml"], [PYTEST]),
        ("update-loader", "build", ["tests/test_config.py"], ["pytest -q tests/test_config.py"]),
        ("run-python-m-pytest-q", "command", [], [PYTEST]),
    ], {"goal": "Migrate settings loading to TOML"}, id="plain-step-lines"),
    pytest.param("german.md", [
        ("lader-hinzufugen", "build", ["src/shop/config.py"], [PYTEST]),
        ("grossenprufung-erganzen", "build", ["src/shop/config.py", "tests/test_config.py"],
         ["pytest -q tests/test_config.py"]),
        ("tests-ausfuhren", "command", [], [PYTEST]),
    ], {"constraints": ["Keine neuen Abhängigkeiten (tomllib reicht)"]}, id="german-schritt"),
    pytest.param("french_emoji.md", [
        ("ajouter-fonction-normalisation", "build", ["src/shop/users.py"], [PYTEST]),
        ("ecrire-tests", "build", ["tests/test_users.py"], [PYTEST]),
        ("lancer-python-m-pytest-q", "command", [], [PYTEST]),
    ], {"constraints": ["ne pas changer l'API publique"]}, id="french-checkboxes-emoji"),
    pytest.param("headings.md", [
        ("add-cache-module", "build", ["src/shop/cache.py"], [PYTEST]),
        ("cache-users-api", "build", ["src/shop/api/users.py"],
         ["python -m pytest -q tests/test_users.py"]),
    ], {"goal": "Cache user lookups: The users endpoint is slow; cache lookups for 60 seconds.",
        "non_goals": ["no Redis"]}, id="setext-headings-code-blocks"),
    pytest.param("paragraph.txt", [
        ("add-slugify-helper", "build", ["src/shop/text.py"], [PYTEST]),
        ("write-tests", "build", ["tests/test_text.py"], [PYTEST]),
        ("run-make-test", "command", [], ["make test"]),
    ], {}, id="one-paragraph-sentences"),
    pytest.param("must_not.md", [
        ("rename-class-every-import", "build", ["src/shop/models.py"],
         [PYTEST, "ruff check src"]),
        ("update-tests-under", "build", ["tests/**"], [PYTEST, "ruff check src"]),
    ], {"constraints": ["Do not touch the database migrations", "Do not rename the REST routes"],
        "non_goals": ["changing the JSON field names"]}, id="dont-section-plan-checks"),
    pytest.param("long.md", [
        ("refund-model", "build", ["src/shop/models.py"],
         ["python -m pytest -q tests/test_models.py"]),
        ("refund-endpoint", "build", ["src/shop/api/orders.py", "tests/test_refunds.py"],
         ["python -m pytest -q tests/test_refunds.py"]),
        ("audit-log", "build", ["src/shop/audit.py", "var/audit.log"], [PYTEST]),
        ("split-api-module", "build", ["src/shop/api/routes.py", "src/shop/api/users.py"],
         [PYTEST]),
        ("type-checks", "build", ["src/shop/**"], ["mypy --strict src/shop"]),
        ("full-test-suite", "command", [], [PYTEST]),
    ], {"non_goals": ["payment provider integration", "a UI for refunds"],
        "acceptance": ["refunds can be created and listed",
                       "every change to an order writes one audit line",
                       "`python -m pytest -q` passes"]}, id="long-markdown"),
]


@pytest.mark.parametrize(("plan", "phases", "fields"), CASES)
def test_plans_against_real_repo(shop: Path, plan: str, phases: list[object],
                                 fields: dict[str, object]) -> None:
    result = normalize_file(str(PLANS / plan), str(shop))
    assert _phases(result) == phases
    for key, want in fields.items():
        assert getattr(result.spec, key) == want, key
    assert result.spec.repo == str(shop)
    assert all(PHASE_ID_RE.match(p.id) for p in result.spec.phases)
    assert [r.id for r in result.phases] == [p.id for p in result.spec.phases]
    assert all(0.0 <= r.confidence <= 1.0 and r.reasons for r in result.phases)
    assert 0.0 <= result.confidence <= 1.0
    validate_spec(spec_to_builtins(result.spec))  # passes the same validation as a hand-written spec


def test_without_repo_no_guessing(shop: Path) -> None:
    r = normalize_file(str(PLANS / "vague.txt"), None)
    assert [(p.scope, p.checks) for p in r.spec.phases] == [([], [])] * 3
    assert r.spec.repo is None
    assert any("no repository given" in w for w in r.warnings)
    explicit = normalize_file(str(PLANS / "explicit.md"), None)
    assert explicit.spec.phases[0].scope == [
        "src/shop/api/health.py", "src/shop/api/routes.py", "tests/test_health.py"]


@pytest.mark.parametrize("repo", [True, False], ids=["with-repo", "without-repo"])
def test_confidence_ordering(shop: Path, repo: bool) -> None:
    """Explicit paths and commands score higher than named steps, which beat a vague list."""
    def conf(name: str) -> float:
        return normalize_file(str(PLANS / name), str(shop) if repo else None).confidence
    explicit, steps, vague = conf("explicit.md"), conf("steps_plain.txt"), conf("vague.txt")
    assert explicit > steps > vague
    assert explicit >= 0.9
    r = normalize_file(str(PLANS / "vague.txt"), str(shop) if repo else None)
    assert r.below_threshold
    assert any("below the threshold" in w for w in r.warnings)
    # phase level: a phase with named paths and commands beats a guessed one
    long = normalize_file(str(PLANS / "long.md"), str(shop) if repo else None)
    by_id = {p.id: p.confidence for p in long.phases}
    assert by_id["refund-endpoint"] > by_id["audit-log"]


def test_threshold_is_configurable(shop: Path) -> None:
    text = (PLANS / "vague.txt").read_text()
    assert not normalize_plan(text, shop, threshold=0.1).below_threshold
    assert normalize_plan(text, shop, threshold=0.99).below_threshold


def test_reasons_explain_guesses(shop: Path) -> None:
    r = normalize_file(str(PLANS / "vague.txt"), str(shop))
    reasons = {p.id: p.reasons for p in r.phases}
    assert "no scope found, using the toolchain's source dirs" in reasons["clean-up-stuff"]
    assert any(x.startswith("no checks named, using the toolchain's") for x in
               reasons["clean-up-stuff"])
    assert any("clean-up-stuff" in w and "source dirs" in w for w in r.warnings)


def test_same_input_same_output(shop: Path) -> None:
    for plan in sorted(PLANS.iterdir()):
        if plan.name in ("notes_only.md", "shopping.txt"):
            continue
        a = normalize_result_json(normalize_file(str(plan), str(shop)))
        b = normalize_result_json(normalize_file(str(plan), str(shop)))
        assert json.dumps(a) == json.dumps(b), plan.name


@pytest.mark.parametrize("plan", sorted(p.name for p in PLANS.iterdir()
                                        if p.name not in ("notes_only.md", "shopping.txt")))
def test_round_trip_toml_and_json(shop: Path, tmp_path: Path, plan: str) -> None:
    spec = normalize_file(str(PLANS / plan), str(shop)).spec
    (tmp_path / "s.toml").write_text(spec_to_toml(spec), encoding="utf-8")
    (tmp_path / "s.json").write_text(json.dumps(spec_to_builtins(spec), ensure_ascii=False),
                                     encoding="utf-8")
    assert load_spec(str(tmp_path / "s.toml")) == spec
    assert load_spec(str(tmp_path / "s.json")) == spec


@pytest.mark.parametrize(("text", "ids"), [
    pytest.param("- Add caching\n- Add caching\n- Add caching\n",
                 ["add-caching", "add-caching-2", "add-caching-3"], id="dedup"),
    pytest.param("# 🚀🚀\n\n## Phase 1: 🎉\nAdd `src/x.py`\n## Phase 2: 日本語を追加\nfix src/y.py\n",
                 ["phase-1", "phase-2"], id="non-latin-falls-back"),
    pytest.param("1. Überprüfe die Größe in `src/a.py`\n2. Ça marche: corrige `src/b.py`\n",
                 ["uberprufe-grosse", "ca-marche"], id="transliterated"),
    pytest.param("Phase one: add a loader to src/a.py\nPhase two: run make test\n",
                 ["add-loader", "run-make-test"], id="phase-words"),
    pytest.param("- [ ] **Split the module** into `src/a.py` and `src/b.py`\n",
                 ["split-module"], id="bold-lead-is-the-title"),
])
def test_ids(text: str, ids: list[str]) -> None:
    r = normalize_plan(text)
    assert [p.id for p in r.spec.phases] == ids


@pytest.mark.parametrize(("text", "checks", "kind"), [
    pytest.param("1. Run the linter: `ruff check .`\n", ["ruff check ."], "command", id="tick"),
    pytest.param("Step 1: Execute ./scripts/smoke.sh\n", [], "build", id="no-known-head"),
    pytest.param("Step 1: Run `./scripts/smoke.sh --fast`\n", ["./scripts/smoke.sh --fast"],
                 "command", id="script-after-run"),
    pytest.param("- Fix the flaky test and run cargo test -p core to confirm\n",
                 ["cargo test -p core"], "build", id="bare-run-with-edit"),
    pytest.param("## Smoke\n```console\n$ make check\nok\n```\n## Fix x\nfix src/x.c\n",
                 ["make check"], "command", id="console-block-output-skipped"),
    pytest.param("## Checks\n```console\n$ make check\nok\n```\n## Fix x\nfix src/x.c\n",
                 ["make check"], "build", id="plan-level-checks-section"),
    pytest.param("- Update `src/app.ts`\n  ```python\n  print('not a command')\n  ```\n", [],
                 "build", id="python-block-is-not-a-command"),
])
def test_commands_and_kind(text: str, checks: list[str], kind: str) -> None:
    phase = normalize_plan(text).spec.phases[0]
    assert (phase.checks, phase.kind) == (checks, kind)


def test_command_phase_without_command_uses_toolchain_tests(shop: Path) -> None:
    r = normalize_plan("- Add `src/shop/x.py`\n- Run the tests\n", shop)
    assert _phases(r)[1] == ("run-tests", "command", [], [PYTEST])


def test_scope_globs_and_dirs(shop: Path) -> None:
    r = normalize_plan("- Refactor everything under src/shop/api/ and `docs/*.md`\n"
                       "- Touch src/shop/api in place, see https://example.org/a/b.py\n", shop)
    assert [p.scope for p in r.spec.phases] == [["src/shop/api/**", "docs/*.md"],
                                              ["src/shop/api/**"]]


@pytest.mark.parametrize(("content", "message"), [
    pytest.param(b"", "is empty", id="empty"),
    pytest.param(b"  \n\t\n", "is empty", id="whitespace"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file", id="binary"),
    pytest.param("Größe prüfen".encode("latin-1"), "not UTF-8", id="latin-1"),
    pytest.param(b"x" * 2000, "larger than the limit of 1000 bytes", id="too-large"),
    pytest.param((PLANS / "notes_only.md").read_bytes(), "nothing actionable", id="notes-only"),
    pytest.param((PLANS / "shopping.txt").read_bytes(), "nothing actionable", id="shopping"),
    pytest.param(b"# Title only\n", "nothing actionable", id="title-only"),
])
def test_bad_plans(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "plan.md"
    path.write_bytes(content)
    with pytest.raises(PlanError, match=message) as info:
        normalize_file(str(path), None, max_bytes=1000)
    assert "\n" not in info.value.message


def test_bad_paths(tmp_path: Path, shop: Path) -> None:
    plan = str(PLANS / "explicit.md")
    with pytest.raises(PlanError, match="is not a git repository"):
        normalize_file(plan, str(tmp_path))
    with pytest.raises(PlanError, match="is not a directory"):
        normalize_file(plan, str(tmp_path / "nope"))
    with pytest.raises(PlanError, match="cannot read plan"):
        normalize_file(str(tmp_path / "missing.md"), str(shop))
    with pytest.raises(PlanError, match="cannot read plan"):
        normalize_file(str(tmp_path), None)  # a directory
    with pytest.raises(PlanError, match="is not a git repository"):
        normalize_plan("- add src/a.py", tmp_path)


def test_result_json_keys(shop: Path) -> None:
    r = normalize_file(str(PLANS / "explicit.md"), str(shop))
    out = normalize_result_json(r)
    assert {"goal", "phases", "repo", "base", "constraints", "non_goals", "limits",
            "confidence", "warnings", "phases_confidence"} <= set(out)
    assert out["phases_confidence"][0] == {"id": "add-endpoint", "confidence": r.phases[0].confidence,
                                           "reasons": r.phases[0].reasons}
    json.dumps(out)


def test_result_from_raw_spec(shop: Path) -> None:
    raw = {"goal": "g", "phases": [
        {"id": "a", "goal": "Add x", "scope": ["src/shop/api/**"], "checks": ["pytest"]},
        {"id": "b", "goal": "Add y", "scope": ["nowhere/x.py"]}]}
    r = result_from_raw_spec(raw, repo=str(shop))
    assert r.spec.repo == str(shop)
    assert r.phases[0].confidence > r.phases[1].confidence
    assert any("not in the repository" in w for w in r.warnings)
    with pytest.raises(PlanError, match="invalid: phases\\[0\\].id"):
        result_from_raw_spec({"goal": "g", "phases": [{"id": "Bad Id", "goal": "x"}]}, repo=None)
    with pytest.raises(SpecError):  # and the same check a hand-written spec gets
        validate_spec({"goal": "g", "phases": [{"id": "Bad Id", "goal": "x"}]})


# ----------------------------------------------------------------------- CLI

RUNNER = textwrap.dedent("""\
    import argparse, sys
    from autopack.daemon.ctl._normalize import register
    parser = argparse.ArgumentParser(prog="autopackctl")
    parser.add_argument("--socket")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(sys.argv[1:])
    sys.exit(args.func(args))
    """)


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "run_ctl.py"
    path.write_text(RUNNER)
    return path


def ctl(runner: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(runner), *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "error"})


def test_cli_human_output_and_outputs(runner: Path, shop: Path, tmp_path: Path) -> None:
    toml_out, json_out = tmp_path / "spec.toml", tmp_path / "spec.json"
    done = ctl(runner, "normalize", str(PLANS / "explicit.md"), "--repo", str(shop), "-o",
               str(toml_out))
    assert done.returncode == 0, done.stderr
    assert '[[phases]]\nid = "add-endpoint"' in done.stdout
    assert "# confidence 1.00" in done.stdout
    assert "#       scope: paths named in the plan" in done.stdout
    done = ctl(runner, "normalize", str(PLANS / "explicit.md"), "--repo", str(shop), "-o",
               str(json_out), "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["confidence"] >= 0.9
    assert out["phases"][0]["id"] == "add-endpoint"
    assert load_spec(str(toml_out)) == load_spec(str(json_out))
    assert load_spec(str(toml_out)) == normalize_file(str(PLANS / "explicit.md"), str(shop)).spec


def test_cli_low_confidence_is_flagged(runner: Path, shop: Path) -> None:
    done = ctl(runner, "normalize", str(PLANS / "vague.txt"), "--repo", str(shop))
    assert done.returncode == 0
    assert "LOW: review and edit before submitting" in done.stdout
    assert "below the threshold 0.60" in done.stdout


@pytest.mark.parametrize(("make_args", "message"), [
    pytest.param(lambda p: [str(p / "missing.md")], "cannot read plan", id="missing"),
    pytest.param(lambda p: [str(PLANS / "shopping.txt")], "nothing actionable", id="nothing"),
    pytest.param(lambda p: [str(PLANS / "explicit.md"), "--repo", str(p)],
                 "is not a git repository", id="not-git"),
    pytest.param(lambda p: [str(PLANS / "explicit.md"), "-o", str(p / "x.yaml")],
                 "must end in .toml or .json", id="bad-output-ext"),
    pytest.param(lambda p: [str(PLANS / "explicit.md"), "--threshold", "2"],
                 "--threshold must be between 0 and 1", id="bad-threshold"),
    pytest.param(lambda p: ["--socket", str(p / "no-daemon.sock"), "normalize",
                            str(PLANS / "explicit.md"), "--llm"],
                 "LLM normalization is not available: ", id="llm-no-daemon"),
])
def test_cli_bad_input_exit_2(runner: Path, tmp_path: Path, make_args: object,
                              message: str) -> None:
    args = make_args(tmp_path)  # type: ignore[operator]
    done = ctl(runner, *(args if args[0] == "--socket" else ["normalize", *args]))
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_cli_too_large(runner: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.md"
    big.write_bytes(b"- add src/a.py\n" * (1024 * 1024 // 15 + 1))
    done = ctl(runner, "normalize", str(big))
    assert done.returncode == 2
    assert "larger than the limit of 1048576 bytes" in done.stderr


