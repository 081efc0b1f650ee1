"""The pure classifier: failure output + exit status + context → Classification.

Theory of operation
-------------------
1. A command known to run under ``timeout`` that ended with 124 (or 137 with
   ``-s KILL``) was stopped by its time limit: ``command_timeout``, whatever
   it printed before.
2. Otherwise one combined regex of short literal *stems* (``_patterns.STEMS``)
   walks the output once, left to right, with ``re.search`` resuming after each
   candidate line. Only candidate lines are confirmed, by the rules whose stems
   occur in that line, in table order. The first decisive (``ROOT``) hit ends
   the walk: the earliest root cause wins over its consequences.
3. Without a root cause, consequence rules (test summaries, "no tests ran")
   decide; without those, nothing does and the answer is ``pattern=None``,
   which sends the failure to the Doctor.

No I/O, no clock, no trio: callers may run it in a worker thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from autopack.protocol import Classification, ClassifyContext

from ._mitigations import mitigation_for
from ._patterns import QUOTED, ROOT, RULES, STEMS, Rule, normalize_details
from ._text import Scan, clean_line, iter_lines_reversed

PREFILTER = re.compile("|".join(re.escape(s) for s in STEMS))
_MAX_LINE = 4000  # confirm at most this much of one line (minified bundles, base64 dumps)
_MAX_CANDIDATES = 250_000
_MAX_EVIDENCE = 500

_RULES_BY_STEM: dict[str, tuple[int, ...]] = {
    stem: tuple(i for i, r in enumerate(RULES) if stem in r.stems) for stem in STEMS
}
_rules_cache: dict[frozenset[str], tuple[Rule, ...]] = {}


def _rules_for(stems: frozenset[str]) -> tuple[Rule, ...]:
    rules = _rules_cache.get(stems)
    if rules is None:
        idx = sorted({i for s in stems for i in _RULES_BY_STEM[s]})
        rules = tuple(RULES[i] for i in idx)
        if len(_rules_cache) < 4096:
            _rules_cache[stems] = rules
    return rules


@dataclass(slots=True)
class Hit:
    pattern: str
    tier: int
    start: int
    end: int
    line: str
    details: dict[str, Any]


def normalize_exit(code: int | None) -> int | None:
    """Negative return codes (killed by signal N, as ``subprocess`` reports them) → ``128 + N``."""
    if code is not None and code < 0:
        return 128 - code
    return code


_TIMEOUT_CMD = re.compile(r"(?:^|[\s;&|(])timeout\s+(?P<opts>(?:-{1,2}[\w-]+(?:[= ](?!\d+(?:\.\d+)?[smhd]?\s)\S+)?\s+)*)(?P<limit>\d+(?:\.\d+)?[smhd]?)\s")
_KILL_OPT = re.compile(r"(?:-s\s*|--signal[= ])(?:KILL|9|SIGKILL)\b|(?:-k\s*|--kill-after[= ])\S+")


def _timeout_by_exit(code: int | None, command: str | None) -> dict[str, Any] | None:
    if code not in (124, 137):
        return None
    if command is None:
        return {"exit_code": 124} if code == 124 else None
    m = _TIMEOUT_CMD.search(command + " ")
    if m is None:
        return None
    if code == 137 and not _KILL_OPT.search(m.group("opts") or ""):
        return None
    return {"exit_code": code, "command": command, "limit": m.group("limit")}


def scan(sc: Scan) -> tuple[Hit | None, list[Hit]]:
    """Walk the output once; return the first root-cause hit and the consequence hits before it."""
    text = sc.text
    search = PREFILTER.search
    findall = PREFILTER.findall
    summaries: list[Hit] = []
    pos = 0
    size = len(text)
    for _ in range(_MAX_CANDIDATES):
        m = search(text, pos)
        if m is None:
            break
        p = m.start()
        s = text.rfind("\n", 0, p) + 1
        e = text.find("\n", p)
        if e < 0:
            e = size
        pos = e + 1
        line = clean_line(text[s : min(e, s + _MAX_LINE)])
        if not line or QUOTED.match(line):
            continue
        stems = frozenset(findall(line))
        if not stems:
            continue
        hit = _confirm(_rules_for(stems), line, sc, s, e)
        if hit is None:
            continue
        if hit.tier == ROOT:
            if sc.in_captured_output(s):
                continue
            return hit, summaries
        if len(summaries) < 500:
            summaries.append(hit)
    return None, summaries


def _confirm(rules: tuple[Rule, ...], line: str, sc: Scan, s: int, e: int) -> Hit | None:
    for rule in rules:
        need = rule.need
        if need:
            if rule.need_rx is None:
                if need[0] not in line:
                    continue
            elif rule.need_rx.search(line) is None:
                continue
        mm = rule.rx.search(line)
        if mm is None:
            continue
        assert rule.post is not None
        verdict = rule.post(mm, line, sc, s, e)
        if verdict is None:
            continue
        pid, details = verdict
        return Hit(pid, rule.tier, s, e, line, normalize_details(details))
    return None


def _clip(line: str) -> str:
    line = line.strip()
    return line if len(line) <= _MAX_EVIDENCE else line[: _MAX_EVIDENCE - 1] + "…"


def _summarize(text: str, hits: list[Hit]) -> tuple[str, list[str], dict[str, Any]] | None:
    failures = [h for h in hits if h.pattern == "test_failure"]
    if failures:
        tests: list[str] = []
        failed = 0
        runner = failures[0].details.get("runner", "")
        for h in failures:
            t = h.details.get("test")
            if t and t not in tests and len(tests) < 50:
                tests.append(t)
            failed = max(failed, int(h.details.get("failed", h.details.get("n", 0)) or 0))
        evidence = [_clip(failures[0].line)]
        counts = [h for h in failures if "failed" in h.details]
        if counts and counts[-1] is not failures[0]:
            evidence.append(_clip(counts[-1].line))
        details: dict[str, Any] = {"runner": runner, "tests": tests, "failed": failed or len(tests)}
        details["excerpt"] = test_excerpt(text, runner, failures[0].start)
        return "test_failure", evidence, details
    empty = [h for h in hits if h.pattern == "no_tests_collected"]
    if empty:
        return "no_tests_collected", [_clip(empty[0].line)], dict(empty[0].details)
    return None


_EXCERPT = 3000


def test_excerpt(text: str, runner: str, first: int) -> str:
    """The failing tests' report, bounded: what the next Builder attempt should read."""
    start = -1
    stop = -1
    if runner == "pytest":
        start = text.find("= FAILURES =")
        stop = text.find("short test summary info", start) if start >= 0 else -1
    elif runner == "cargo":
        start = text.find("\n---- ")
        stop = text.find("\ntest result: FAILED", start) if start >= 0 else -1
    elif runner in ("node", "jest", "mocha"):
        start = text.find("not ok ")
    if start < 0:
        start = max(0, first - _EXCERPT // 2)
    if stop < 0 or stop - start > _EXCERPT:
        stop = start + _EXCERPT
    return text[max(0, start) : stop].strip()


def classify(
    output: str | bytes, exit_code: int | None = None, ctx: ClassifyContext | None = None
) -> Classification:
    """Name the failure with one taxonomy id, or ``pattern=None`` when nothing deterministic fits.

    ``output`` is the command's combined stdout/stderr (bytes are decoded as
    UTF-8 with replacement). ``exit_code`` may be negative (killed by a signal,
    as ``subprocess`` reports it). The returned evidence holds the deciding
    line(s); ``details`` the extracted facts (module, file/line, port,
    retry_after, failing tests, package, ...); ``mitigation`` what to do.
    Never raises on any input.
    """
    text = output.decode("utf-8", "replace") if isinstance(output, bytes | bytearray) else output
    ctx = ctx or ClassifyContext()
    code = normalize_exit(exit_code)
    sc = Scan(text, code, ctx)

    pattern: str | None = None
    evidence: list[str] = []
    details: dict[str, Any] = {}

    timed = _timeout_by_exit(code, ctx.command) if ctx.command is not None else None
    if timed is not None:
        pattern, details = "command_timeout", timed
        evidence = [f"exit status {code} from `{ctx.command}`"]
    else:
        root, summaries = scan(sc)
        if root is not None:
            pattern, evidence, details = root.pattern, [_clip(root.line)], root.details
        else:
            decided = _summarize(text, summaries)
            if decided is not None:
                pattern, evidence, details = decided
            else:
                # Exit 124 alone means timeout(1) only when the command is unknown.
                timed = _timeout_by_exit(code, None) if ctx.command is None else None
                if timed is not None:
                    pattern, details = "command_timeout", timed
                    evidence = [f"exit status {code}"]
    if pattern is None:
        return Classification(pattern=None, evidence=[_clip(x) for x in _tail(text, 3)])
    return Classification(
        pattern=pattern,
        evidence=evidence,
        details=details,
        mitigation=mitigation_for(pattern, details, ctx),
    )


def _tail(text: str, n: int) -> list[str]:
    return list(reversed(list(iter_lines_reversed(text, n))))


def naive_classify(output: str | bytes) -> str | None:
    """The baseline the benchmark compares against: every rule's regex over the whole text.

    Same rules, no prefilter, no early exit: each pattern scans the full output
    (multi-line mode) and the earliest match wins. For ``bench/`` only.
    """
    text = output.decode("utf-8", "replace") if isinstance(output, bytes | bytearray) else output
    best: tuple[int, str] | None = None
    for rx, pid in _naive_rules():
        m = rx.search(text)
        if m is not None and (best is None or m.start() < best[0]):
            best = (m.start(), pid)
    return best[1] if best else None


_naive_cache: list[tuple[re.Pattern[str], str]] = []


def _naive_rules() -> list[tuple[re.Pattern[str], str]]:
    if not _naive_cache:
        _naive_cache.extend((re.compile(r.rx.pattern, re.M), r.pid) for r in RULES)
    return _naive_cache


def timeout_record(seconds: float) -> str:
    """The line a supervisor appends to a check's output when it stopped the check for its time limit.

    ``classify`` reads it as decisive ``command_timeout`` evidence.
    """
    return f"autopack: command timed out after {seconds:g} s (killed)"
