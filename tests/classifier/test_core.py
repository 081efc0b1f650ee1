"""Pure core: tables of synthetic cases for precedence, misleading text and details."""

from __future__ import annotations

import autopack.actors.classifier as classifier
import pytest
from autopack.actors.classifier import PATTERNS, classify, distribution_for, timeout_record
from autopack.protocol import ClassifyContext


def test_public_surface_is_pinned() -> None:
    assert sorted(classifier.__all__) == sorted([
        "PATTERNS", "ActionResult", "ClassifierActor", "ClassifierStatistics", "ClassifyRequest",
        "action_key", "apply_mitigation", "classify", "declared_dependencies", "distribution_for",
        "is_stdlib", "mitigation_for", "ClassifierClient", "timeout_record", "undeclared_dependency",
        "TestSummary", "parse_test_summary",
    ])
    for name in classifier.__all__:
        assert getattr(classifier, name) is not None
    assert len(PATTERNS) == 21


@pytest.mark.parametrize(("module", "dist"), [
    pytest.param("yaml", "PyYAML", id="yaml"), pytest.param("cv2", "opencv-python", id="cv2"),
    pytest.param("PIL.Image", "Pillow", id="dotted"), pytest.param("sklearn", "scikit-learn", id="sklearn"),
    pytest.param("bs4", "beautifulsoup4", id="bs4"), pytest.param("google.protobuf", "protobuf", id="namespace"),
    pytest.param("requests", "requests", id="same-name"), pytest.param("my_pkg", "my-pkg", id="underscore"),
])
def test_distribution_for(module: str, dist: str) -> None:
    assert distribution_for(module) == dist


CASES = [
    pytest.param("E   ModuleNotFoundError: No module named 'yaml'\n1 failed in 0.1s\n", None, None, "python_missing_dep", id="missing-dep-beats-test-summary"),
    pytest.param("ModuleNotFoundError: No module named 'app.core'\n", None, ClassifyContext(repo_modules=["app"]), "wrong_working_dir", id="repo-module-is-wrong-dir"),
    pytest.param("", 137, ClassifyContext(command="timeout -s KILL 5 make"), "command_timeout", id="kill-timeout-not-oom"),
    pytest.param("Killed\n", 137, ClassifyContext(command="make -j8"), "out_of_memory", id="killed-137-oom"),
    pytest.param("", 137, None, None, id="bare-137-unknown"),
    pytest.param("", 124, ClassifyContext(command="make"), None, id="124-without-timeout-command"),
    pytest.param("tests/a.py::test_permission_denied PASSED\n", 0, None, None, id="test-named-like-pattern"),
    pytest.param("test result: ok. 3 passed; 0 failed; 0 ignored\n", 0, None, None, id="zero-failed"),
    pytest.param("src/log.py:3:    print(\"error: bad\")\n", 0, None, None, id="grep-error-colon"),
    pytest.param(">       assert 'No space left on device' in out\nE       AssertionError: assert 'No space left on device' in ''\n", 1, None, None, id="assertion-quotes-evidence"),
    pytest.param("SyntaxError: Unexpected token } in JSON at position 3\n    at JSON.parse (<anonymous>)\n", 1, None, None, id="json-parse-not-python"),
    pytest.param(timeout_record(900) + "\n", None, None, "command_timeout", id="daemon-timeout-record"),
    pytest.param("\x1b[31mE   ModuleNotFoundError: No module named 'cv2'\x1b[0m\n", 1, None, "python_missing_dep", id="ansi-colours"),
    pytest.param("git@github.com: Permission denied (publickey).\n", 128, None, "auth_error", id="ssh-publickey-is-auth"),
    pytest.param("dial tcp 127.0.0.1:5432: connect: connection refused\n", 1, None, "network_unreachable", id="go-refused"),
    pytest.param("Error: listen EADDRINUSE: address already in use :::3000\n", 1, None, "port_in_use", id="port"),
    pytest.param("ModuleNotFoundError: No module named '_ctypes'\n", 1, None, "python_missing_dep", id="stdlib-module"),
    # lines as bash prints them: `bash -c '/nonexistent/bin/uv pip install -e .'` (exit 127),
    # `bash -c 'cd /tmp/nowhere'` and `bash -c 'cat < data/in.csv'` (exit 1); inside a script
    # bash adds "line N:". A cd into a missing directory stays a path whatever the exit status.
    pytest.param("bash: /nonexistent/bin/uv: No such file or directory\n", 127, None, "missing_command", id="shell-enoent-127-is-missing-command"),
    pytest.param("bash: line 1: /tmp/x/.venv/bin/uv: No such file or directory\n", 127, None, "missing_command", id="shell-enoent-127-line"),
    pytest.param("bash: line 1: cd: /tmp/nowhere: No such file or directory\n", 127, None, "wrong_working_dir", id="shell-cd-enoent-stays-path"),
    pytest.param("bash: line 1: data/in.csv: No such file or directory\n", 1, None, "wrong_working_dir", id="shell-enoent-1-is-path"),
    # lockfiles out of date with the manifest, as uv 0.13 (sync --locked), poetry 2.x (install)
    # and npm 10 (ci) print it
    pytest.param("Resolved 7 packages in 12ms\nerror: The lockfile at `uv.lock` needs to be updated, but `--locked` was provided.\n\nhint: To update the lockfile, run `uv lock`.\n", 1, None, "dependency_conflict", id="uv-stale-lock"),
    pytest.param("Installing dependencies from lock file\n\npyproject.toml changed significantly since poetry.lock was last generated. Run `poetry lock` to fix the lock file.\n", 1, None, "dependency_conflict", id="poetry-stale-lock"),
    pytest.param("npm error code EUSAGE\nnpm error\nnpm error `npm ci` can only install packages when your package.json and package-lock.json or npm-shrinkwrap.json are in sync. Please update your lock file with `npm install` before continuing.\nnpm error\nnpm error Missing: left-pad@1.3.0 from lock file\n", 1, None, "dependency_conflict", id="npm-ci-stale-lock"),
    # timeouts: words in tests and source are not events; a retried attempt is not the outcome
    pytest.param("  File \"t.py\", line 3, in test_x\n    check(\"Read timed out.\")\nKeyError: 'x'\n", 1, None, None, id="traceback-source-line-quotes-timeout"),
    pytest.param("    def test_x():\n        msg = \"Connection timed out\"\n>       assert f(msg)\nE       assert False\n", 1, None, None, id="pytest-source-quotes-timeout"),
    pytest.param("  ● retries on ETIMEDOUT\n\nTests:       1 failed, 1 total\n", 1, None, "test_failure", id="jest-title-names-timeout"),
    pytest.param("not ok 1 - handles ETIMEDOUT\n# fail 1\n", 1, None, "test_failure", id="tap-title-names-timeout"),
    pytest.param("E   ValueError: unexpected message: Connection timed out\n1 failed in 0.1s\n", 1, None, "test_failure", id="valueerror-quotes-timeout"),
    pytest.param("      3| test('Connection timed out', () => {})\n      Tests  1 failed (1)\n", 1, None, "test_failure", id="vitest-frame-and-summary"),
    pytest.param("curl: (28) Operation timed out after 1001 milliseconds\ncurl: (22) The requested URL returned error: 404\n", 22, None, None, id="curl-retry-outcome-is-last"),
    pytest.param("curl: (28) Operation timed out after 1001 milliseconds\ncurl: (28) Operation timed out after 1002 milliseconds\n", 28, None, "network_timeout", id="curl-every-attempt-timed-out"),
    pytest.param("HTTP request sent, awaiting response... Read error (Connection timed out) in headers.\nRetrying.\n\nHTTP request sent, awaiting response... 404 Not Found\n", 8, None, None, id="wget-retried-past-timeout"),
    pytest.param("HTTP request sent, awaiting response... Read error (Connection timed out) in headers.\nGiving up.\n", 4, None, "network_timeout", id="wget-gave-up"),
    pytest.param("ERROR:root:attempt 1 failed, retrying\nTraceback (most recent call last):\n  File \"f.py\", line 4, in <module>\nTimeoutError: timed out\n"
                 "Traceback (most recent call last):\n  File \"f.py\", line 9, in <module>\nKeyError: 'release'\n", 1, None, None, id="logged-timeout-then-died-of-else"),
    pytest.param("ERROR:root:attempt 1 failed, retrying\nTraceback (most recent call last):\n  File \"f.py\", line 4, in <module>\nTimeoutError: timed out\nFAILED t.py::test_a - assert 1 == 2\n", 1, None, "test_failure", id="retried-timeout-yields-to-tests"),
    pytest.param("ERROR:root:attempt 3 failed, retrying\nTraceback (most recent call last):\n  File \"f.py\", line 4, in <module>\nTimeoutError: timed out\nfetch failed after 3 attempts\n", 1, None, "network_timeout", id="retried-timeout-when-nothing-else"),
    pytest.param("Traceback (most recent call last):\n  File \"f.py\", line 4, in <module>\nTimeoutError: timed out\n\nDuring handling of the above exception, another exception occurred:\n\n"
                 "Traceback (most recent call last):\n  File \"f.py\", line 5, in <module>\nurllib.error.URLError: <urlopen error timed out>\n", 1, None, "network_timeout", id="chained-timeout-stays"),
    pytest.param("attempt 1 failed: The operation was aborted due to timeout, retrying\n/x/fetch.js:14\nTypeError: Cannot read properties of undefined (reading 'version')\n"
                 "    at main (/x/fetch.js:14:28)\n\nNode.js v20.20.2\n", 1, None, None, id="warned-retry-then-node-crash-of-else"),
    pytest.param("WARNING: Retrying (Retry(total=0)) after connection broken by 'ReadTimeoutError(\"HTTPSConnectionPool(host='pypi.org', port=443): Read timed out. (read timeout=15)\")': /simple/six/\n"
                 "ERROR: Could not find a version that satisfies the requirement six (from versions: none)\nERROR: No matching distribution found for six\n", 1, None, "network_timeout", id="pip-retries-explain-no-versions"),
]


@pytest.mark.parametrize(("output", "code", "ctx", "expected"), CASES)
def test_classify_table(output: str, code: int | None, ctx: ClassifyContext | None, expected: str | None) -> None:
    assert classify(output, code, ctx).pattern == expected


def test_details_and_mitigations() -> None:
    c = classify("Error: listen EADDRINUSE: address already in use :::3000\n", 1)
    assert c.details["port"] == 3000
    c = classify("ModuleNotFoundError: No module named '_ctypes'\n", 1)
    assert c.mitigation is not None
    assert c.mitigation.kind == "hint"  # never install stdlib names
    c = classify("ModuleNotFoundError: No module named 'sklearn.svm'\n", 1)
    assert c.mitigation is not None
    assert (c.mitigation.kind, c.mitigation.package) == ("install_dependency", "scikit-learn")
    c = classify("Error: Cannot find module '@scope/pkg/lib/x'\n", 1, ClassifyContext(lockfile_manager="pnpm"))
    assert c.mitigation is not None
    assert (c.mitigation.package, c.mitigation.manager) == ("@scope/pkg", "pnpm")
    c = classify("HTTP/1.1 429 Too Many Requests\nretry-after: 12\n", 22)
    assert c.mitigation is not None
    assert c.mitigation.kind == "wait"
    assert c.mitigation.wait_s == 12.0


def test_bytes_and_huge_lines_do_not_break() -> None:
    blob = b"\xff\xfe" + b"x" * 200_000 + b"\nOSError: [Errno 28] No space left on device\n"
    assert classify(blob, 1).pattern == "disk_full"
