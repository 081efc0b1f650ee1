"""What to do about each pattern: an action the daemon may take, or a hint for the Builder.

Pure: decides, never acts (``_actions`` acts). Whether an action may run by
itself is the ``auto_mitigate`` setting's business, not this module's.
"""

from __future__ import annotations

from typing import Any

from autopack.protocol import ClassifyContext, Mitigation

from ._distmap import distribution_for, is_stdlib

DEFAULT_WAIT_S = 30.0
NETWORK_RETRY_WAIT_S = 10.0

NODE_BUILTINS: frozenset[str] = frozenset(
    """assert async_hooks buffer child_process cluster console constants crypto dgram
    diagnostics_channel dns domain events fs http http2 https inspector module net os path
    perf_hooks process punycode querystring readline repl stream string_decoder sys timers
    tls trace_events tty url util v8 vm wasi worker_threads zlib test""".split()
)


def _loc(d: dict[str, Any]) -> str:
    if "file" in d and "line" in d:
        col = f":{d['column']}" if "column" in d else ""
        return f"{d['file']}:{d['line']}{col}"
    return str(d.get("file", ""))


def mitigation_for(pattern: str, details: dict[str, Any], ctx: ClassifyContext) -> Mitigation:
    """The mitigation for ``pattern`` given the extracted ``details``."""
    fn = _TABLE.get(pattern)
    if fn is None:
        return Mitigation(kind="none", summary=f"no mitigation known for {pattern}")
    m: Mitigation = fn(details, ctx)
    return m


def _python_missing(d: dict[str, Any], ctx: ClassifyContext) -> Mitigation:
    module = str(d.get("module", ""))
    if not module or is_stdlib(module):
        return Mitigation(
            kind="hint",
            summary=f"standard-library module {module!r} cannot be imported; do not pip install it",
            hint=(
                f"`import {module}` failed although {module!r} belongs to Python's standard library: "
                "check the interpreter version, and look for a local file or directory shadowing it."
            ),
        )
    dist = distribution_for(module)
    return Mitigation(
        kind="install_dependency",
        summary=f"install {dist} (provides import {module!r}) into the run's environment",
        hint=f"The code imports {module!r}, provided by the distribution {dist}: declare {dist} in the project's dependencies.",
        package=dist,
        manager="pip",
    )


def _node_missing(d: dict[str, Any], ctx: ClassifyContext) -> Mitigation:
    pkg = str(d.get("package", ""))
    if not pkg or pkg.removeprefix("node:").split("/")[0] in NODE_BUILTINS:
        return Mitigation(
            kind="hint",
            summary=f"{pkg!r} is a Node.js built-in module; nothing to install",
            hint=f"{pkg!r} is built into Node.js: check the Node version and the import path.",
        )
    manager = ctx.lockfile_manager or "npm"
    return Mitigation(
        kind="install_dependency",
        summary=f"{manager} add {pkg}" if manager != "npm" else f"npm install {pkg}",
        hint=f"The code requires {pkg!r}: declare it in package.json dependencies.",
        package=pkg,
        manager=manager,
    )


def _wait(d: dict[str, Any], ctx: ClassifyContext) -> Mitigation:
    wait = float(d.get("retry_after") or DEFAULT_WAIT_S)
    return Mitigation(kind="wait", summary=f"rate limited: wait {wait:g} s, then retry", wait_s=wait)


def _net_timeout(d: dict[str, Any], ctx: ClassifyContext) -> Mitigation:
    return Mitigation(
        kind="wait",
        summary=f"network operation timed out: retry after {NETWORK_RETRY_WAIT_S:g} s (backoff)",
        wait_s=NETWORK_RETRY_WAIT_S,
    )


def _hint(summary: str, hint: str) -> Any:
    def fn(d: dict[str, Any], ctx: ClassifyContext) -> Mitigation:
        values = {k: v for k, v in d.items() if isinstance(v, str | int | float)}
        values.setdefault("loc", _loc(d) or "the reported location")
        values.setdefault("where", d.get("path") or d.get("module") or d.get("file") or "see evidence")
        values.setdefault("host", "see evidence")
        values.setdefault("package", d.get("requirement", "(see evidence)"))
        if "name" in d and "module" in d:  # "cannot import name 'X' from 'y'"
            values.setdefault("message", f"cannot import name {d['name']!r} from {d['module']!r}")
        for key, fallback in _FALLBACK.items():
            values.setdefault(key, fallback)
        return Mitigation(kind="hint", summary=_fmt(summary, values), hint=_fmt(hint, values))

    return fn


def _none(summary: str) -> Any:
    def fn(d: dict[str, Any], ctx: ClassifyContext) -> Mitigation:
        return Mitigation(kind="none", summary=_fmt(summary, d))

    return fn


# What a template says when the rule that fired did not capture that detail: words
# that read well in the sentence, never a bare placeholder (this text reaches prompts).
_FALLBACK = {
    "message": "see the evidence lines",
    "manager": "package manager",
    "kind": "syntax error",
    "command": "(see evidence)",
    "port": "(see evidence)",
    "where": "see evidence",
}


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return _FALLBACK.get(key, "(see evidence)")


def _fmt(template: str, values: dict[str, Any]) -> str:
    return template.format_map(_Missing(values))


def _tests(d: dict[str, Any], ctx: ClassifyContext) -> Mitigation:
    tests = d.get("tests") or []
    names = ", ".join(tests[:10]) if tests else f"{d.get('failed', 'some')} test(s)"
    excerpt = str(d.get("excerpt", ""))
    return Mitigation(
        kind="hint",
        summary=f"tests failed: {names}",
        hint=f"These tests fail: {names}. Fix the code (not the tests, unless they are wrong). Report:\n{excerpt}",
    )


def _compile(d: dict[str, Any], ctx: ClassifyContext) -> Mitigation:
    loc = _loc(d)
    msg = d.get("message", "")
    code = f" [{d['code']}]" if d.get("code") else ""
    where = f"{loc}: " if loc else ""
    return Mitigation(
        kind="hint",
        summary=f"compile error at {loc or 'the reported location'}{code}",
        hint=f"The compiler rejected the code: {where}{msg}{code}. Fix it there.",
    )


_TABLE: dict[str, Any] = {
    "python_missing_dep": _python_missing,
    "node_missing_dep": _node_missing,
    "rate_limited": _wait,
    "network_timeout": _net_timeout,
    "python_import_error": _hint(
        "import error: {message}",
        "An import failed although the module is installed ({message}). Use the installed version's API "
        "or pin the version the code expects.",
    ),
    "python_syntax_error": _hint(
        "{kind} at {loc}",
        "Python cannot parse {loc}: {kind}: {message}. Fix the syntax there.",
    ),
    "compile_error": _compile,
    "package_not_found": _hint(
        "{manager} cannot find package {package}",
        "The package manager cannot find {package}. Correct the name or version; "
        "retrying unchanged will fail again.",
    ),
    "dependency_conflict": _hint(
        "dependency versions conflict ({manager})",
        "The resolver cannot satisfy the version constraints. Relax or align the pins instead of retrying.",
    ),
    "missing_command": _hint(
        "command {command} not found on PATH",
        "The command {command} is not installed here. Use the toolchain's own runner (e.g. `python -m {command}`, "
        "`npx {command}`) or a tool that is available.",
    ),
    "wrong_working_dir": _hint(
        "path not found from the working directory ({where})",
        "A path or module the command expects was not found from the current directory ({where}). "
        "Commands run from the repository root; fix the relative path or the import.",
    ),
    "test_failure": _tests,
    "no_tests_collected": _hint(
        "the test runner collected no tests",
        "No tests were collected: check test paths, file naming (test_*.py / *.test.js) and the runner's config.",
    ),
    "patch_apply_failed": _hint(
        "change could not be applied ({where})",
        "The change did not apply cleanly ({where}); re-read the current file contents and rewrite the change "
        "against them. Remove any conflict markers.",
    ),
    "permission_denied": _hint(
        "permission denied ({where})",
        "The OS refused access ({where}). Write only inside the run's worktree; never escalate privileges.",
    ),
    "disk_full": _none("no space left on device: free space (caches, old worktrees), then retry"),
    "out_of_memory": _hint(
        "out of memory",
        "The process ran out of memory. Lower parallelism or memory use (smaller batches, streaming), then retry.",
    ),
    "command_timeout": _hint(
        "command stopped by its time limit",
        "The command ran past its time limit. Find the hang or the slow part (or raise the limit); "
        "do not retry unchanged.",
    ),
    "network_unreachable": _hint(
        "network or host unreachable ({host})",
        "A network endpoint could not be reached ({host}). Check the URL/host and whether the run is offline; "
        "avoid network access in checks.",
    ),
    "auth_error": _none("credentials missing or rejected: fix credentials; never retry unchanged"),
    "port_in_use": _hint(
        "port {port} already in use",
        "Port {port} is already in use. Pick a free port (bind to port 0 in tests) or stop the old process.",
    ),
}
