"""The failure patterns: one table of line rules, checked in order.

Theory of operation
-------------------
Every rule names a taxonomy id, the *words* (``Rule.stems``) one of which must
appear in a line for the rule to be worth trying, an anchored regex that
confirms the line, and optionally a ``post`` check that looks at neighbouring
lines or the command context and may veto the hit or re-route it to another id
(a missing module that belongs to the repo is ``wrong_working_dir``; a
``SyntaxError`` over merge-conflict markers is ``patch_apply_failed``).

The engine (``_core``) scans the output for the ``STEMS`` (never one regex
per pattern), and only candidate lines are confirmed here; within a line, a
rule is tried only when the line starts with its ``prefix`` or holds one of
its ``need`` literals (both derived from the regex).
Rules of tier ``ROOT`` are decisive: the earliest such line wins. Tier
``SUMMARY`` rules describe consequences (test summaries, "no tests ran") and
only decide when no root cause was found.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._text import Scan

ROOT = 0
SUMMARY = 1

Details = dict[str, Any]
Verdict = tuple[str, Details] | None
Post = Callable[[re.Match[str], str, Scan, int, int], Verdict]

PATTERNS: dict[str, str] = {
    "python_missing_dep": "a Python import names a module that is not installed",
    "python_import_error": "the module exists but the imported name does not, or a compiled extension fails to load",
    "python_syntax_error": "Python source does not parse (SyntaxError, IndentationError, TabError)",
    "node_missing_dep": "a Node.js module or package cannot be resolved",
    "package_not_found": "the package manager cannot find a package or version at all",
    "dependency_conflict": "the resolver finds no set of versions that fits",
    "missing_command": "an executable is not on PATH",
    "wrong_working_dir": "a path (or the repo's own module) is not where the command looked",
    "compile_error": "a compiler or type checker rejected the code",
    "test_failure": "tests ran and some failed",
    "no_tests_collected": "the test runner found nothing to run",
    "patch_apply_failed": "a change could not be applied to the worktree (patch, merge conflict)",
    "permission_denied": "the OS refused access",
    "disk_full": "no space left on device",
    "out_of_memory": "the process ran out of memory or was killed for it",
    "command_timeout": "the command ran past its time limit and was stopped",
    "network_timeout": "a network operation started but did not finish in time",
    "network_unreachable": "the network, host or name could not be reached at all",
    "rate_limited": "a remote API refused for load or quota (429, 529, overloaded)",
    "auth_error": "credentials missing or rejected (401, 403, missing API key)",
    "port_in_use": "a server could not bind its port (address already in use)",
}

# The literals the engine scans the whole output for (case-sensitive). Every
# rule names *words* (``Rule.stems``) one of which each line it can match
# contains; every word must contain one of these literals (checked at import),
# so a line with no literal in it can match no rule. The engine compiles one
# regex per first character (``r(?:ror|efused|...)``): a regex with a literal
# first character is searched an order of magnitude faster by ``re`` than an
# alternation starting with many different characters, so the literals are cut
# to start with few distinct characters ("Killed" is found as "illed",
# "Unauthorized" as "nauthorized"): eleven passes over the text in all.
STEMS: tuple[str, ...] = (
    "rror", "refused", "reachable", "ry exhausted",
    "RROR", "RR!", "Ran 0 tests", "Read-only",
    "not ", "nauthorized", "ndefined ref", "nnot find", "no tests ran",
    "No ", "NFLICT",
    "fail", "f memory",
    "FAIL", "Fail",
    "denied", "deselected",
    "imeout", "in use", "illed", "imed out", "imit",
    "Too Many",
    "cate memory", "collected 0 ", "curl: (", "can't open", "conflicts", "changed significantly",
    "fatal: unable to access",
    ".go:",
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One line rule. ``rx`` is searched in a cleaned line (``re.search``)."""

    pid: str
    stems: tuple[str, ...]  # words one of which every line the rule can match contains
    rx: re.Pattern[str]
    post: Post | None = None
    tier: int = ROOT
    need: tuple[str, ...] = ()  # literals one of which every match contains (derived from rx)
    prefix: tuple[str, ...] = ()  # for a rule anchored with ``^``: literals one of which every match starts with


_RENAME = {"msg": "message", "col": "column", "file2": "file", "line2": "line", "col2": "column", "code2": "code", "msg2": "message"}
_INTS = frozenset({"line", "column", "port", "bytes", "status"})
_FLOATS = frozenset({"seconds", "retry_after"})


def normalize_details(d: Details) -> Details:
    """Uniform keys and types: ``msg`` → ``message``, numbers as numbers."""
    out: Details = {}
    for k, v in d.items():
        if v is None:
            continue
        k = _RENAME.get(k, k)
        if isinstance(v, str) and k in _INTS and v.isdigit():
            v = int(v)
        elif isinstance(v, str) and k in _FLOATS:
            try:
                v = float(v)
            except ValueError:
                pass
        out.setdefault(k, v)
    return out


def _default(pid: str) -> Post:
    def post(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
        return pid, dict(m.groupdict())

    return post


_QUOTED_PATH = re.compile(r"'([^']+)'|‘([^’]+)’|: ([^:\s]+): Permission denied")


def _perm(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    d: Details = dict(m.groupdict())
    if not d.get("path"):
        pm = _QUOTED_PATH.search(line)
        if pm:
            d["path"] = pm.group(1) or pm.group(2) or pm.group(3)
    return "permission_denied", d


# --- helpers ---------------------------------------------------------------

_PYFILE = re.compile(r'File "([^"]+)", line (\d+)')
_MARKER = re.compile(r"^\s*(?:\d+\s*\|\s*)?(?:<{7}|={7}|>{7})(?:\s|$)")
PY = r"^(?:E\s+)?"  # pytest prefixes exception lines with "E   "


def _py_location(sc: Scan, start: int, line: str) -> Details:
    """File/line of the nearest ``File "x", line N`` above a Python exception line."""
    for prev in reversed(sc.lines_before(start, 8)):
        fm = _PYFILE.search(prev)
        if fm:
            return {"file": fm.group(1), "line": int(fm.group(2))}
    pm = re.search(r"\(([^(),]+), line (\d+)\)$", line)  # py_compile: "(mod.py, line 3)"
    if pm:
        return {"file": pm.group(1), "line": int(pm.group(2))}
    return {}


def _under_subprocess(sc: Scan, start: int) -> bool:
    return any(
        "_execute_child" in p or "subprocess.py" in p or "os.exec" in p or "spawn" in p
        for p in sc.lines_before(start, 10)
    )


# --- post checks -------------------------------------------------------------

_REPOISH = frozenset({"src", "tests", "test", "testing", "app", "conftest"})


def _missing_module(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    gd = m.groupdict()
    module = (gd.get("module") or gd.get("m2") or "").strip("'\"")
    if "is not a package" in line:
        return "python_import_error", {"module": module, "message": line.strip()}
    top = module.split(".", 1)[0]
    if top in sc.ctx.repo_modules or (not sc.ctx.repo_modules and top in _REPOISH):
        return "wrong_working_dir", {"module": module, "reason": "repo module not importable from here"}
    return "python_missing_dep", {"module": module, "top_level": top}


def _syntax(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    before = sc.lines_before(start, 6)
    if any(_MARKER.match(p[1:] if p.startswith("E ") else p) for p in before):
        return "patch_apply_failed", {**_py_location(sc, start, line), "reason": "merge conflict markers in source"}
    if any(re.search(r"\.(?:[cm]?[jt]sx?):\d+$", p) for p in before[-5:]):
        after = sc.lines_after(end, 3)
        if any("JSON.parse" in a for a in after):
            return None
        loc = next((re.search(r"(\S+\.(?:[cm]?[jt]sx?)):(\d+)$", p) for p in reversed(before) if re.search(r"\.(?:[cm]?[jt]sx?):\d+$", p)), None)
        d: Details = {"message": m.group("msg")}
        if loc:
            d.update(file=loc.group(1), line=int(loc.group(2)))
        return "compile_error", d
    loc_d = _py_location(sc, start, line)
    if not loc_d and not (line.startswith(("E ", "Sorry:"))):
        return None  # a bare "SyntaxError:" with no Python context: not sure it is Python source
    return "python_syntax_error", {"kind": m.group("kind"), "message": m.group("msg"), **loc_d}


def _python_fnf(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    path = m.group("path")
    if _under_subprocess(sc, start):
        return "missing_command", {"command": path}
    return "wrong_working_dir", {"path": path}


def _shell_enoent(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    # the shell says "PATH: No such file or directory" both for a missing file it was asked
    # to read and for a command named by a path that is not there; exit 127 is the latter
    if sc.exit_code == 127 and not m.group("cd"):
        return "missing_command", {"command": m.group("path")}
    return "wrong_working_dir", {"path": m.group("path")}


def _node_module(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    name = m.group("module")
    if name.startswith(("node:",)):
        return None
    if name.startswith((".", "/", "~")) or re.match(r"^[A-Za-z]:\\", name):
        return "wrong_working_dir", {"path": name}
    parts = name.split("/")
    package = "/".join(parts[:2]) if name.startswith("@") and len(parts) > 1 else parts[0]
    return "node_missing_dep", {"module": name, "package": package}


def _rust_error(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    for nxt in sc.lines_after(end, 2):
        lm = re.match(r"^\s*--> (.+?):(\d+):(\d+)$", nxt)
        if lm:
            d: Details = {"file": lm.group(1), "line": int(lm.group(2)), "column": int(lm.group(3)), "message": m.group("msg")}
            if m.group("code"):
                d["code"] = m.group("code")
            if "conflict marker" in line or "diff marker" in line:
                return "patch_apply_failed", d
            return "compile_error", d
    if m.group("code"):
        return "compile_error", {"code": m.group("code"), "message": m.group("msg")}
    return None


def _c_error(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    d: Details = {"file": m.group("file"), "line": int(m.group("line")), "message": m.group("msg")}
    if m.group("col"):
        d["column"] = int(m.group("col"))
    if "conflict marker" in d["message"]:
        return "patch_apply_failed", d
    return "compile_error", d


def _mypy(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    return "compile_error", {"file": m.group("file"), "line": int(m.group("line")), "message": m.group("msg"), "code": m.group("code")}


def _killed(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    if sc.exit_code not in (None, 137, -9):
        return None
    return "out_of_memory", {"signal": "KILL"}


def _curl(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    code = int(m.group("code"))
    msg = m.group("msg")
    if code == 28:
        # with --retry curl prints one error per attempt: the last attempt's is the outcome
        if _superseded(sc, end, line):
            return None
        return "network_timeout", {"tool": "curl", "message": msg}
    if code in (5, 6, 7):
        host = re.search(r"(?:resolve (?:proxy|host): |connect to )(\S+)(?: port (\d+))?", msg)
        d: Details = {"tool": "curl", "message": msg}
        if host:
            d["host"] = host.group(1)
            if host.group(2):
                d["port"] = int(host.group(2))
        return "network_unreachable", d
    if code == 22:
        st = re.search(r"error: (\d{3})", msg)
        status = int(st.group(1)) if st else 0
        if status == 429:
            return "rate_limited", {"status": 429, **_retry_after(sc, start, end)}
        if status in (401, 403, 407):
            return "auth_error", {"status": status}
    return None


_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def _handled_then_died(text: str, end: int) -> bool:
    """True when a Python traceback that is not chained to this line starts later.

    A program that logs a caught exception (``logging.exception``) prints its
    traceback and goes on; when it dies later of something else, a new
    ``Traceback`` starts without "During handling of the above exception" /
    "The above exception was the direct cause" before it.
    """
    nxt = text.find(_TRACEBACK, end)
    if nxt < 0:
        return False
    between = text[end:nxt]
    return not any(c in between for c in _CHAINED)


_RETRYING = re.compile(r"\b(?:[Rr]etrying|[Ww]ill retry|retry(?:ing)? in \d)")


def _logged_as_retried(sc: Scan, start: int) -> bool:
    """True when the traceback ending at ``start`` is introduced by a log line saying it will be retried.

    ``logging.exception("fetch attempt 1 failed, retrying")`` prints that line,
    then the caught exception's traceback; the program goes on.
    """
    tb = sc.text.rfind(_TRACEBACK, max(0, start - 50_000), start)
    if tb < 0:
        return False
    header = sc.lines_before(tb, 1)
    return bool(header) and _RETRYING.search(header[0]) is not None


def _superseded(sc: Scan, end: int, line: str) -> bool:
    """True when a later attempt of the same operation got past this timeout (its outcome decides).

    wget prints each attempt's outcome and "Retrying." after one it will retry;
    curl with ``--retry`` prints one ``curl: (N)`` error per attempt; a program
    that logged a caught timeout and died later of something else died of that.
    """
    after = sc.lines_after(end, 1)
    if after and after[0] == "Retrying.":
        return True
    if line.startswith("curl: (") and re.search(r"^curl: \(\d+\) ", sc.text[end:], re.M):
        return True
    return _handled_then_died(sc.text, end)


_NODE_CRASH = re.compile(r"^Node\.js v\d+\.\d+\.\d+$", re.M)  # node >= 18 after an uncaught exception


def crashed_after(text: str, end: int) -> bool:
    """True when the program crashed of an uncaught exception after offset ``end``.

    A Python traceback that starts there (not chained to what came before), or
    node's closing ``Node.js vX.Y.Z`` line. Used for a timeout a log line called
    retried: when the program went on and crashed afterwards, the crash is the
    failure (had it been a timeout, that line would have decided first).
    """
    return _handled_then_died(text, end) or _NODE_CRASH.search(text, end) is not None


def _net_timeout(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    """A network timeout, unless a later attempt got past it (``_superseded``).

    A timeout whose traceback a log line introduces as retried is marked
    ``retried``: the engine lets it decide only when nothing else does.
    """
    if _superseded(sc, end, line) or _DATA_ERROR.match(line):
        return None
    d: Details = dict(m.groupdict())
    if _RETRYING.search(line) or _logged_as_retried(sc, start):
        d["retried"] = True
    return "network_timeout", d


# An exception of a programming-error type whose message quotes a timeout phrase: the
# code rejected or compared a text ("unexpected message: Connection timed out"), as
# Python prints it, pytest's "E" line shows it, or pytest's short summary repeats it.
_DATA_ERROR = re.compile(r"^(?:E\s+|FAILED \S+ - )?(?:[\w.]+\.)?(?:ValueError|TypeError|KeyError|IndexError|AttributeError|NameError|LookupError|AssertionError|NotImplementedError): ")


_RETRY = re.compile(r"(?i)(?:retry-after|retry_after|x-ratelimit-reset-after)[\"']?\s*[:=]\s*[\"']?(\d+(?:\.\d+)?)|try again in (\d+(?:\.\d+)?)\s*s")


def _retry_after(sc: Scan, start: int, end: int) -> Details:
    window = sc.lines_before(start, 15) + [sc.text[start:end]] + sc.lines_after(end, 5)
    for w in window:
        rm = _RETRY.search(w)
        if rm:
            return {"retry_after": float(rm.group(1) or rm.group(2))}
    return {}


_UV_MISSING = re.compile(r"Because (?P<package>[A-Za-z0-9][\w.\[\]-]*) was not found in the "
                         r"(?:package registry|cache|provided package locations)")


def _no_solution(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    """uv's "No solution found" whose cause is a name nobody has is not a conflict."""
    for nxt in sc.lines_after(end, 3):
        um = _UV_MISSING.search(nxt)
        if um:
            return "package_not_found", {"manager": "uv", "package": um.group("package")}
    return "dependency_conflict", {}


def _rate(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    d: Details = {k: v for k, v in m.groupdict().items() if v}
    status = re.search(r"\b(429|529)\b", line)
    if status:
        d["status"] = int(status.group(1))
    return "rate_limited", {**d, **_retry_after(sc, start, end)}


_PORT_CMD = re.compile(r"(?:--port[= ]|-p[= ]?|:)(\d{2,5})\b|\s(\d{4,5})(?:\s|$)")
_PORT_SRC = re.compile(r"""\(\s*\(?\s*(?:["'][^"']*["']\s*,\s*)?(\d{2,5})\s*\)""")


def _port(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    d: Details = {}
    pm = re.search(r":(\d{2,5})\b(?!.*:\d)", line)
    if pm:
        d["port"] = int(pm.group(1))
    if "port" not in d:
        for nxt in sc.lines_after(end, 12):
            nm = re.match(r"^\s*port: (\d+)", nxt)
            if nm:
                d["port"] = int(nm.group(1))
                break
    if "port" not in d:
        for prev in reversed(sc.lines_before(start, 6)):
            if "bind" in prev or "listen" in prev:
                sm = _PORT_SRC.search(prev)
                if sm:
                    d["port"] = int(sm.group(1))
                    break
    if "port" not in d and sc.ctx.command:
        cm = _PORT_CMD.search(sc.ctx.command)
        if cm:
            d["port"] = int(cm.group(1) or cm.group(2))
    return "port_in_use", d


_CUSTOM_INDEX = re.compile(r"(?:^|\s)(?:--index-url|--extra-index-url|-i)[= ]")


def _index_said_nothing(sc: Scan, line: str, start: int) -> bool:
    """pip found no versions on an index the command chose itself.

    At default verbosity pip prints the same "(from versions: none)" for a project
    the index does not have (404) and for an index that refused the request (401,
    403, 429 without retries): nothing in the output tells them apart, so no id is
    honest there and the Doctor decides. After pip's "Retrying ... after connection
    broken by" warnings it read nothing because it could not: those warnings decide.
    """
    nothing = "(from versions: none)" in line or any("(from versions: none)" in p for p in sc.lines_before(start, 2))
    if nothing and "after connection broken by" in sc.text[max(0, start - 50_000) : start]:
        return True  # pip retried a broken connection to the index and then read no versions: the retries tell why
    if not sc.ctx.command or not _CUSTOM_INDEX.search(sc.ctx.command):
        return False
    return nothing


def _pip_not_found(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    req = m.group("req")
    parent = m.group("parent")
    if _index_said_nothing(sc, line, start):
        return None
    if parent and not parent.startswith("from versions"):
        return "dependency_conflict", {"manager": "pip", "requirement": req, "required_by": parent.removeprefix("from ")}
    name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]
    return "package_not_found", {"manager": "pip", "requirement": req, "package": name}


def _npm_code(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    code = m.group("code")
    after = sc.lines_after(end, 8)
    if code in ("E404", "ETARGET"):
        d: Details = {"manager": "npm", "code": code}
        for a in after:
            pm = re.search(r"'((?:@[^/'\s]+/)?[^@'\s]+)@[^']*' (?:is not in this registry|could not be found)|No matching version found for ((?:@[^/\s]+/)?[^@\s]+)@", a)
            if pm:
                d["package"] = pm.group(1) or pm.group(2)
                break
        return "package_not_found", d
    if code == "ERESOLVE":
        return "dependency_conflict", {"manager": "npm", "code": code}
    if code in ("E401", "E403", "EAUTHUNKNOWN", "ENEEDAUTH"):
        return "auth_error", {"manager": "npm", "code": code}
    if code == "E429":
        return "rate_limited", {"manager": "npm", **_retry_after(sc, start, end)}
    if code == "EACCES" or code == "EPERM":
        return "permission_denied", {"manager": "npm", "code": code}
    if code == "ENOSPC":
        return "disk_full", {"manager": "npm"}
    if code in ("ETIMEDOUT", "ESOCKETTIMEDOUT"):
        return "network_timeout", {"manager": "npm", "code": code}
    if code in ("ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH", "ECONNRESET"):
        return "network_unreachable", {"manager": "npm", "code": code}
    if code == "EADDRINUSE":
        return _port(m, line, sc, start, end)
    return None


def _tests_line(runner: str) -> Post:
    def post(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
        d: Details = {"runner": runner}
        for k, v in m.groupdict().items():
            if v is not None:
                d[k] = v
        if "failed" in d:
            if int(d["failed"]) < 1:
                return None
            d["failed"] = int(d["failed"])
        return "test_failure", d

    return post


def _unittest_summary(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    if "_FailedTest" in sc.text:  # a test module failed to import: not a test result
        return None
    return "test_failure", {"runner": "unittest", "failed": int(m.group("n"))}


def _surefire(m: re.Match[str], line: str, sc: Scan, start: int, end: int) -> Verdict:
    failed = int(m.group("f")) + int(m.group("e"))
    return ("test_failure", {"runner": "surefire", "failed": failed}) if failed else None


# --- the table ---------------------------------------------------------------
# Order matters for lines that several rules could read: specific before generic.

def _r(pid: str, stems: tuple[str, ...], rx: str, post: Post | None = None, tier: int = ROOT) -> Rule:
    compiled = re.compile(rx)
    need = required_literal(compiled)
    return Rule(pid, stems, compiled, post or _default(pid), tier, need, required_prefix(compiled))


def required_prefix(rx: re.Pattern[str]) -> tuple[str, ...]:
    """For ``^lit...`` or ``^(?:a|b)lit...``: the literals one of which every match starts with.

    ``()`` when the pattern is not anchored at the start of the line, begins
    with anything but literals, or a prefix would be shorter than 3 characters.
    """
    if rx.flags & (re.IGNORECASE | re.MULTILINE):
        return ()
    items = list(_parse(rx.pattern))
    if not items or str(items[0][0]) != "AT" or str(items[0][1]) != "AT_BEGINNING":
        return ()
    heads = [""]
    for op, av in items[1:]:
        name = str(op)
        if name == "LITERAL":
            heads = [h + chr(av) for h in heads]
            continue
        if name == "BRANCH" and heads == [""] and all(alt and all(str(o) == "LITERAL" for o, _ in alt) for alt in av[1]):
            heads = ["".join(chr(a) for _, a in alt) for alt in av[1]]
            continue
        if name == "SUBPATTERN" and heads == [""] and not av[1] and not av[2]:
            inner = list(av[-1])
            if len(inner) == 1 and str(inner[0][0]) == "BRANCH":
                alts = inner[0][1][1]
                if all(alt and all(str(o) == "LITERAL" for o, _ in alt) for alt in alts):
                    heads = ["".join(chr(a) for _, a in alt) for alt in alts]
                    continue
        break
    return tuple(heads) if all(len(h) >= 3 for h in heads) else ()


def required_literal(rx: re.Pattern[str]) -> tuple[str, ...]:
    """Literals one of which every match of ``rx`` must contain (``()`` when none is certain).

    Best effort over the parsed pattern: the longest required literal run, or
    else one literal per alternative of a required branch. Classes, optional
    parts and case-insensitive patterns give nothing.
    """
    if rx.flags & re.IGNORECASE:
        return ()
    return _needs(_parse(rx.pattern))


def _parse(pattern: str) -> Any:
    """The stdlib's parse tree of ``pattern`` (``re._parser``: private, used for best-effort gates only)."""
    import importlib

    return importlib.import_module("re._parser").parse(pattern)


def _needs(items: Any) -> tuple[str, ...]:
    best = ""
    branch: tuple[str, ...] = ()
    run = ""
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            run += chr(av)
            continue
        best = max(best, run, key=len)
        run = ""
        sub: tuple[str, ...] = ()
        if name == "SUBPATTERN":
            if av[1] & re.IGNORECASE:  # (?i:...): its literals are not required as written
                continue
            sub = _needs(av[-1])
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and av[0] >= 1:
            sub = _needs(av[2])
        elif name == "BRANCH":
            alts = [_needs(alt) for alt in av[1]]
            if all(alts):
                sub = tuple(x for a in alts for x in a)
        if len(sub) == 1:
            best = max(best, sub[0], key=len)
        elif sub and not branch:
            branch = sub
    best = max(best, run, key=len)
    if len(best) >= 3:
        return (best,)
    if branch and all(len(x) >= 3 for x in branch):
        return branch
    return ()


RULES: tuple[Rule, ...] = (
    # Time limits recorded by someone who knows (the daemon, subprocess, pytest-timeout).
    _r("command_timeout", ("timed out",), r"^autopack: (?:command|check) timed out after (?P<seconds>[\d.]+) ?s"),
    _r("command_timeout", ("imeout",), PY + r"(?:subprocess\.)?TimeoutExpired: Command '(?P<command>.*)' timed out after (?P<seconds>[\d.]+) seconds"),
    _r("command_timeout", ("imeout",), r"^(?:E\s+)?Failed: Timeout >(?P<seconds>[\d.]+)s"),
    _r("command_timeout", ("timed out",), r"^panic: test timed out after (?P<limit>\S+)$"),  # go test -timeout
    # npm / yarn / pnpm error codes (decide many ids at once).
    _r("package_not_found", ("rror", "ERR!"), r"^npm (?:ERR!|error) code (?P<code>E[A-Z0-9_]+)$", _npm_code),
    _r("package_not_found", ("rror", "RROR"), r"(?:Couldn't find package \"(?P<package>[^\"]+)\".* registry|ERR_PNPM_FETCH_404|ERR_PNPM_NO_MATCHING_VERSION)"),
    # Python imports.
    _r("python_missing_dep", ("rror", "No "), PY + r"(?:ModuleNotFoundError|ImportError): No module named (?P<module>'[\w.]+'|[\w.]+)", _missing_module),
    _r("python_missing_dep", ("No ",), r"^\S*python[\d.]*: (?:No module named (?P<module>[\w.]+)$|Error while finding module specification for '[\w.]+' \(ModuleNotFoundError: No module named '(?P<m2>[\w.]+)'\))",
       _missing_module),
    _r("python_import_error", ("rror",), PY + r"ImportError: cannot import name '(?P<name>\w+)' from (?:partially initialized module )?'(?P<module>[\w.]+)'"),
    _r("python_import_error", ("rror",), PY + r"ImportError: (?P<message>.*(?:cannot open shared object file|undefined symbol|invalid ELF header|wrong ELF class|dynamic module does not define|DLL load failed|version `GLIBC|incompatible architecture|mach-o file).*)"),
    # Syntax (Python, with JS and conflict-marker re-routes).
    _r("python_syntax_error", ("rror",), PY + r"(?:Sorry: )?(?P<kind>SyntaxError|IndentationError|TabError): (?P<msg>.*)", _syntax),
    # Conflicts / patches.
    _r("patch_apply_failed", ("rror",), r"^error: patch failed: (?P<file>.+):(?P<line>\d+)$"),
    _r("patch_apply_failed", ("rror",), r"^error: (?P<file>.+): patch does not apply$"),
    _r("patch_apply_failed", ("FAIL",), r"^Hunk #\d+ FAILED at (?P<line>\d+)"),
    _r("patch_apply_failed", ("FAIL",), r"^\d+ out of \d+ hunks? FAILED"),
    _r("patch_apply_failed", ("CONFLICT",), r"^CONFLICT \([\w/ -]+\): .*?(?: in (?P<file>\S+))?$"),
    _r("patch_apply_failed", ("rror",), r"^error: could not apply [0-9a-f]{7,}\.\.\."),
    _r("patch_apply_failed", ("fail",), r"^Automatic merge failed; fix conflicts"),
    _r("patch_apply_failed", ("fail",), r"^Patch failed at \d+"),
    _r("patch_apply_failed", ("conflicts",), r"^Applied patch to '(?P<file>[^']+)' with conflicts\.$"),
    _r("patch_apply_failed", ("rror",), r"^error: Your local changes to the following files would be overwritten by (?:merge|checkout)"),
    # Rate limits and auth (before generic HTTP/connection rules).
    _r("rate_limited", ("rror",), r"(?:RateLimitError|OverloadedError|rate_limit_error|overloaded_error|Error code: 429|Error code: 529|HTTP Error 429|status code 429|code E429)", _rate),
    _r("rate_limited", ("Too Many",), r"(?:^HTTP/[\d.]+ 429\b|\b429 Too Many Requests\b|TooManyRequests)", _rate),
    _r("rate_limited", ("ate limit",), r"\b[Rr]ate [Ll]imit (?:[Ee]xceeded|EXCEEDED)\b|[Ss]econdary [Rr]ate [Ll]imit", _rate),  # no (?i): its literals gate it
    _r("auth_error", ("denied",), r"Permission denied \((?:publickey|password|keyboard-interactive)"),
    _r("auth_error", ("rror",), r"(?:AuthenticationError|PermissionDeniedError|authentication_error|invalid x-api-key|Error code: 401|HTTP Error 40[13]|401 Client Error|403 Client Error|Invalid API Key|invalid_api_key)"),
    _r("auth_error", ("not ",), r"(?:Could not resolve authentication method|could not read (?:Username|Password) for '[^']+'|api_key client option must be set)"),
    _r("auth_error", ("fail",), r"^(?:fatal|remote): Authentication failed for"),
    _r("auth_error", ("Unauthorized",), r"(?:^HTTP/[\d.]+ 401\b|\b401 Unauthorized\b)"),
    _r("auth_error", ("rror", "RROR"), r"(?:ANTHROPIC_API_KEY|OPENAI_API_KEY)\b.*(?:not set|missing|must be set|required)"),
    # curl exit codes.
    _r("network_unreachable", ("curl: (",), r"^curl: \((?P<code>\d+)\) (?P<msg>.*)", _curl),
    # Ports.
    _r("port_in_use", ("in use", "rror"), r"(?:\[Errno (?:98|48)\] |: |^|\")[Aa]ddress already in use|\bEADDRINUSE\b|\bAddrInUse\b", _port),
    # Disk, memory, permissions (OS errors).
    _r("disk_full", ("No ", "rror"), r"(?:\[Errno 28\] |: |^|\bENOSPC\b:? )[Nn]o space left on device"),
    _r("disk_full", ("rror",), r"\bENOSPC\b|\[Errno 122\] Disk quota exceeded"),
    _r("out_of_memory", ("rror",), PY + r"(?:[\w.]+\.)?_?(?:Array)?MemoryError\b"),
    _r("out_of_memory", ("of memory",), r"(?:JavaScript heap out of memory|\bout of memory allocating\b|runtime: out of memory|^Out of memory: Kill(?:ed)? process|OutOfMemoryError|CUDA out of memory)"),
    _r("out_of_memory", ("fail",), r"^memory allocation of (?P<bytes>\d+) bytes failed"),
    _r("out_of_memory", ("allocate memory", "memory exhausted"), r"(?:\[Errno 12\] |: |^)Cannot allocate memory|virtual memory exhausted"),
    _r("out_of_memory", ("rror",), r"java\.lang\.OutOfMemoryError"),
    _r("out_of_memory", ("Killed",), r"(?:^Killed$|^(?:\S+: )?(?:line \d+: )?\s*\d+ Killed\s+\S)", _killed),
    _r("permission_denied", ("rror", "denied"), r"(?:\[Errno 13\] |: |^)Permission denied(?:$|:| \(os error 13\)|,)", _perm),
    _r("permission_denied", ("rror",), r"(?:^|\b)(?:Error: )?EACCES(?:: permission denied, (?P<op>\w+) '(?P<path>[^']+)')?", _perm),
    _r("permission_denied", ("not ", "rror"), r"(?:\[Errno 1\] |: )Operation not permitted(?:$|:)", _perm),
    _r("permission_denied", ("Read-only", "rror"), r"(?:\[Errno 30\] |: )Read-only file system(?:$|:)", _perm),
    # Network.
    _r("network_timeout", ("imeout", "timed out", "rror"),
       PY + r"(?:[\w.]+\.)?(?:ReadTimeout|ConnectTimeout|ReadTimeoutError|ConnectTimeoutError|ConnectTimeout|PoolTimeout|WriteTimeout|APITimeoutError|TimeoutError: timed out|timeout: timed out|TimeoutError: \[Errno 110\])", _net_timeout),
    _r("network_timeout", ("imeout", "timed out", "rror"),
       r"(?:Read timed out\.|Connection timed out|\bETIMEDOUT\b|ESOCKETTIMEDOUT|UND_ERR_(?:CONNECT|HEADERS|BODY)_TIMEOUT|aborted due to timeout|<urlopen error timed out>|Operation timed out after \d+|Timeout was reached|i/o timeout|context deadline exceeded \(Client\.Timeout)", _net_timeout),
    _r("network_timeout", ("fatal: unable to access",), r"^fatal: unable to access '[^']*': Operation too slow\. Less than \d+ bytes/sec"),  # git's low-speed limit
    _r("network_unreachable", ("refused", "rror"), r"(?:[Cc]onnection refused|\bECONNREFUSED\b)"),
    _r("network_unreachable", ("rror", "not ", "fail", "No ", "unreachable", "Fail"),
       r"(?:\bENOTFOUND\b|\bEAI_AGAIN\b|ENETUNREACH|EHOSTUNREACH|Could not resolve (?:host|proxy)|Temporary failure in name resolution|Name or service not known|nodename nor servname|Network is unreachable|No route to host|Couldn't connect to server|Failed to connect to \S+ port \d+|APIConnectionError|NameResolutionError|getaddrinfo failed)"),
    # Commands.
    _r("missing_command", ("not ",), r"^(?:\S+: )?(?:line \d+: )?(?P<command>[\w.+/-]+): command not found$"),
    _r("missing_command", ("not ",), r"^(?:zsh|fish): command not found: (?P<command>\S+)$"),
    _r("missing_command", ("not ",), r"^(?:\S*sh|sh): \d+: (?P<command>[\w.+/-]+): not found$"),
    _r("missing_command", ("No ",), r"^(?:make(?:\[\d+\])?|env|xargs|nice|nohup|timeout|exec): ['‘`]?(?P<command>[\w.+-]+)['’`]?: No such file or directory$"),
    _r("missing_command", ("rror",), r"Error: spawn(?:Sync)? (?P<command>\S+) ENOENT"),
    _r("missing_command", ("rror",), r"(?:^|: )No such file or directory \(os error 2\)$", lambda m, line, sc, s, e: None),
    # Paths.
    _r("wrong_working_dir", ("rror",), r"^error: file not found: (?P<path>\S+)$"),  # javac
    _r("wrong_working_dir", ("RROR",), r"^\[ERROR\] The goal you specified requires a project to execute but there is no POM in this directory"),
    _r("wrong_working_dir", ("not ",), r"^go: go\.mod file not found in current directory or any parent directory"),
    _r("wrong_working_dir", ("No ",), r"^tar: (?P<path>[^:]+): Cannot open: No such file or directory$"),
    _r("wrong_working_dir", ("can't open",), r"can't open file '(?P<path>[^']+)': \[Errno 2\]"),
    _r("wrong_working_dir", ("RROR",), r"^ERROR: file or directory not found: (?P<path>\S+)"),
    _r("wrong_working_dir", ("rror",), r"could not find `Cargo\.toml` in"),
    _r("wrong_working_dir", ("rror", "ERR!"), r"^npm (?:ERR!|error) (?:enoent )?Could not read package\.json"),
    _r("wrong_working_dir", ("rror", "RROR"), r"Couldn't find a package\.json file"),
    _r("wrong_working_dir", ("No ",), r"^make(?:\[\d+\])?: \*\*\* (?:No targets specified and no makefile found|No rule to make target ['`‘](?P<path>[^'’]+)['’], needed by)"),
    _r("wrong_working_dir", ("not ",), r"^fatal: not a git repository"),
    _r("wrong_working_dir", ("rror",), r"^(?:cc1(?:plus)?|gcc|g\+\+|cc|c\+\+|clang(?:\+\+)?): (?:fatal )?error: (?P<path>[^:]+): No such file or directory"),
    _r("wrong_working_dir", ("rror",), PY + r"FileNotFoundError: \[Errno 2\] No such file or directory: '(?P<path>[^']+)'", _python_fnf),
    _r("wrong_working_dir", ("rror",), r"Error: ENOENT: no such file or directory, (?:open|scandir|stat|lstat|uv_cwd|chdir) '(?P<path>[^']+)'"),
    _r("wrong_working_dir", ("No ",), r"^(?:\S*sh|bash|zsh)(?:: line \d+)?: (?P<cd>cd: )?(?P<path>[^:\s]*/[^:]*|[^:\s]+): No such file or directory$", _shell_enoent),
    _r("wrong_working_dir", ("No ",), r"^(?:cat|ls|cp|mv|head|tail|wc|diff|tar|source|chmod|sort|cd|stat|realpath|readlink): (?:cannot (?:access|stat|open) )?['‘]?(?P<path>[^'’:]+)['’]?(?: for reading)?: No such file or directory$"),
    # Node modules.
    _r("node_missing_dep", ("rror", "Cannot find"), r"Cannot find (?:module|package) '(?P<module>[^']+)'", _node_module),
    _r("node_missing_dep", ("rror",), r"Module not found: Error: Can't resolve '(?P<module>[^']+)'", _node_module),
    _r("node_missing_dep", ("rror",), r"error TS2307: Cannot find module '(?P<module>[^']+)'", _node_module),
    # Package managers.
    _r("package_not_found", ("RROR",), r"^ERROR: Could not find a version that satisfies the requirement (?P<req>\S+)(?: \((?P<parent>[^)]*)\))?", _pip_not_found),
    _r("package_not_found", ("RROR",), r"^ERROR: No matching distribution found for (?P<package>\S+)",
       lambda m, line, sc, s, e: None if _index_said_nothing(sc, line, s) else ("package_not_found", dict(m.groupdict()))),
    _r("package_not_found", ("rror",), r"^error: no matching package (?:named|found) `?(?P<package>[^`\s]+)`?"),
    _r("package_not_found", ("rror", "RROR"), r"(?:PackageNotFoundError|HTTP error 404 while getting|Because \S+ depends on \S+ which doesn't exist)"),
    _r("dependency_conflict", ("RROR", "rror"), r"(?:ResolutionImpossible|because these package versions have conflicting dependencies|SolverProblemError|version solving failed|No solution found when resolving dependencies)", _no_solution),
    _r("dependency_conflict", ("rror",), r"^error: failed to select a version for"),
    # A lockfile out of date with its manifest (uv sync --locked, poetry install, npm ci):
    # the locked pins no longer fit the declared requirements.
    _r("dependency_conflict", ("rror",), r"^error: The lockfile at `(?P<lockfile>[^`]+)` needs to be updated, but `--locked` was provided",
       lambda m, line, sc, s, e: ("dependency_conflict", {"manager": "uv", "lockfile": m.group("lockfile")})),
    _r("dependency_conflict", ("changed significantly",), r"changed significantly since (?P<lockfile>poetry\.lock) was last generated",
       lambda m, line, sc, s, e: ("dependency_conflict", {"manager": "poetry", "lockfile": m.group("lockfile")})),
    _r("dependency_conflict", ("rror", "RR!"), r"`npm ci` can only install packages when your package\.json and (?P<lockfile>package-lock\.json|npm-shrinkwrap\.json)(?: or npm-shrinkwrap\.json)? are in sync",
       lambda m, line, sc, s, e: ("dependency_conflict", {"manager": "npm", "lockfile": m.group("lockfile")})),
    # Compilers and type checkers.
    _r("compile_error", ("rror",), r"^error(?:\[(?P<code>E\d{4})\])?: (?P<msg>.+)$", _rust_error),
    _r("compile_error", ("rror",), r"^(?P<file>[^\s:][^:]*\.(?:c|cc|cpp|cxx|c\+\+|h|hh|hpp|hxx|m|mm|cu|f|f90|s|S)):(?P<line>\d+):(?:(?P<col>\d+):)? (?:fatal )?error: (?P<msg>.*)", _c_error),
    _r("compile_error", ("rror",), r"^(?P<file>[^\s:][^:]*\.(?:java|kt|scala|cs)):(?P<line>\d+): error: (?P<msg>.*)"),
    _r("compile_error", ("RROR",), r"^\[ERROR\] (?P<file>\S+\.(?:java|kt|scala)):\[(?P<line>\d+),(?P<col>\d+)\] (?P<msg>.+)$"),  # maven
    _r("compile_error", ("rror",), r"^(?P<file>[^\s(]+\.(?:tsx?|mts|cts|vue))[(:](?P<line>\d+)[,:](?P<col>\d+)\)?:? - error (?P<code>TS\d+): (?P<msg>.*)|^(?P<file2>[^\s(]+\.(?:tsx?|mts|cts))\((?P<line2>\d+),(?P<col2>\d+)\): error (?P<code2>TS\d+): (?P<msg2>.*)"),
    _r("compile_error", ("rror",), r"^(?P<file>[^\s:]+\.pyi?):(?P<line>\d+):(?:\d+:)? error: (?P<msg>.*?)  \[(?P<code>[a-z][\w-]*)\]$", _mypy),
    _r("compile_error", ("rror",), r"^\s*(?P<file>\S+\.pyi?):(?P<line>\d+):(?P<col>\d+) - error: (?P<msg>.*)"),
    _r("compile_error", ("undefined ref",), r"(?:^|: )(?P<file>[^\s:]*):?\(?[^)]*\)?: undefined reference to [`'‘](?P<symbol>[^'’]+)['’]"),
    _r("compile_error", ("rror",), r"^(?:/\S*/)?ld(?:\.\w+)?: cannot find -l(?P<lib>\S+)"),
    _r("compile_error", (".go:",), r"^(?:\./)?(?P<file>[^\s:]+\.go):(?P<line>\d+):(?P<col>\d+): (?P<msg>(?!warning).+)$"),
    # Test results (consequences).
    _r("test_failure", ("FAIL",), r"^FAILED (?P<test>\S+::\S+?)(?: - .*)?$", _tests_line("pytest"), SUMMARY),
    _r("test_failure", ("FAIL",), r"^(?P<test>\S+::\S+) FAILED(?:\s+\[\s*\d+%\])?$", _tests_line("pytest"), SUMMARY),
    _r("test_failure", ("fail",), r"^=*\s*(?P<failed>\d+) failed(?:, \d+ \w+)*(?: in [\d.]+s)", _tests_line("pytest"), SUMMARY),
    _r("test_failure", ("FAIL",), r"^FAILED \((?:failures|errors)=(?P<n>\d+)", _unittest_summary, SUMMARY),
    _r("test_failure", ("FAIL", "RROR"), r"^(?:FAIL|ERROR): \w+ \((?P<test>[\w.]+)\)$", lambda m, line, sc, s, e: None if "_FailedTest" in line else _tests_line("unittest")(m, line, sc, s, e), SUMMARY),
    _r("test_failure", ("FAIL",), r"^test result: FAILED\. \d+ passed; (?P<failed>\d+) failed", _tests_line("cargo"), SUMMARY),
    _r("test_failure", ("FAIL",), r"^test (?P<test>\S+) \.\.\. FAILED$", _tests_line("cargo"), SUMMARY),
    _r("test_failure", ("fail",), r"^# fail (?P<failed>\d+)$", _tests_line("node"), SUMMARY),
    _r("test_failure", ("not ",), r"^not ok \d+ - (?P<test>.+?)(?: # .*)?$", _tests_line("node"), SUMMARY),
    _r("test_failure", ("fail",), r"^Tests:\s+(?P<failed>\d+) failed", _tests_line("jest"), SUMMARY),
    _r("test_failure", ("fail",), r"^\s+(?P<failed>\d+) failing$", _tests_line("mocha"), SUMMARY),
    _r("test_failure", ("fail",), r"^\s*Tests\s+(?P<failed>\d+) failed(?: \||\s+\(\d+\)$)", _tests_line("vitest"), SUMMARY),
    _r("test_failure", ("Fail",), r"^(?:\[ERROR\] )?Tests run: \d+, Failures: (?P<f>\d+), Errors: (?P<e>\d+), Skipped: \d+$", _surefire, SUMMARY),
    _r("test_failure", ("FAIL",), r"^--- FAIL: (?P<test>\S+)", _tests_line("go"), SUMMARY),
    _r("no_tests_collected", ("no tests ran",), r"^=*\s*no tests ran in [\d.]+s", None, SUMMARY),
    _r("no_tests_collected", ("collected 0 ",), r"^collected 0 items\s*$", None, SUMMARY),
    _r("no_tests_collected", ("deselected",), r"^=*\s*\d+ deselected in [\d.]+s", None, SUMMARY),
    _r("no_tests_collected", ("Ran 0 tests",), r"^Ran 0 tests in", lambda m, line, sc, s, e: ("no_tests_collected", {"runner": "unittest"}) if sc.exit_code in (None, 5) or "NO TESTS RAN" in "".join(sc.lines_after(e, 3)) else None, SUMMARY),
    _r("no_tests_collected", ("No ",), r"^No tests found, exiting with code 1", None, SUMMARY),
)


# A line that names a test rather than a failure: a pytest section header, a test
# id with its outcome (its parameters may read "Connection refused"), a failing
# test's argument as pytest shows it (``msg = 'Connection refused'``). Such a line
# can still be a test result (consequence), never a root cause.
NOT_ROOT = re.compile(
    r"^(?:_{3,} .* _{3,}$"
    r"|(?:FAILED|ERROR|PASSED|SKIPPED|XFAIL|XPASS) [^\s\[]+::[^\s\[]+(?:\[[^\]]*\])?(?: - (?:AssertionError|assert\b|Failed: DID NOT)|$)"
    r"|[^\s\[]+::[^\s\[]+(?:\[[^\]]*\])? (?:PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)\b"
    r"|\w+ = (?:'[^']*'|\"[^\"]*\")$"
    r"|\s*@[\w.]+\("  # a decorator line of quoted source (pytest tracebacks)
    r"|\s*\+\s+where "  # pytest's assertion explanation, as -rA repeats it without "E"
    # a test's title as a runner prints it (tests are named after what they check:
    # "retries on ETIMEDOUT"): jest/vitest bullets and marks, a FAIL file > title
    # line, TAP (node --test) results and subtests, unittest's test lines
    r"|\s*[●✕✓✔✗×√❯] "
    r"|\s*(?:FAIL|PASS|✗|×)\s+\S+ > "
    r"|(?:not )?ok \d+ - |# Subtest: "
    r"|(?:FAIL|ERROR): \w+ \([\w.]+\)$|\w+ \([\w.]+\) \.\.\. "
    # an assertion's message (what the test expected, quoting the text it compared)
    r"|(?:[\w.]+\.)?(?:AssertionError|AssertionFailedError)\b|\s*(?:Expected|Received)(?: value)?: |\s+(?:expected|actual): )"
)

_FRAME = re.compile(r'^\s*File "[^"]+", line \d+|^[^\s:]+\.py:\d+: in \S+$')  # Python; pytest --tb=short
_PYTEST_MARK = re.compile(r"^>\s{2,}\S")  # pytest's failing source line: ">       assert x"


def quoted_source(sc: Scan, start: int, end: int, line: str) -> bool:
    """True when ``line`` is a line of source code that a traceback shows, not output.

    Python prints a frame's source line right under ``File "x.py", line N``;
    pytest prints the failing function's source, indented, down to the line it
    marks with ``>``. A string in that source ("Connection timed out") is the
    code under test talking about an error, not the error.
    """
    if not line[:1].isspace():  # source is shown indented; the exception line is not
        return False
    before = sc.lines_before(start, 1)
    if before and _FRAME.match(before[0]):
        return True
    for nxt in sc.lines_after(end, 30):
        if _PYTEST_MARK.match(nxt):
            return True
        if nxt and not nxt[:1].isspace():
            return False
    return False


# A line that is source code or an assertion diff quoting text: never evidence.
QUOTED = re.compile(r"^(?:\s*>\s|\s*>$|E\s+(?:AssertionError\b|assert\b|[-+?] |where |and |Full diff|At index|Differing|Omitting|Left contains|Right contains|Use -v)|\s*assert\b|\s+\d+ ?\| |\s+\| )")  # jest "  4 | code", vitest "  4| code"
