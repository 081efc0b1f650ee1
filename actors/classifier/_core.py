"""The pure classifier: failure output + exit status + context → Classification.

Theory of operation
-------------------
1. A command known to run under ``timeout`` that ended with 124 (or 137 with
   ``-s KILL``) was stopped by its time limit: ``command_timeout``, whatever
   it printed before.
2. Otherwise the output is scanned for short literal *stems*
   (``_patterns.STEMS``), a chunk of about 1 MB at a time, with one regex per
   stems' first character (a dozen fast literal searches, never one regex per
   pattern). Only the lines holding a stem are confirmed, in order, by the
   rules whose words contain a stem of that line, in table order. The first
   decisive (``ROOT``) hit ends the walk, without scanning the chunks after
   it: the earliest root cause wins over its consequences.
   A root-cause line that is quoted source (a traceback's code line) or a
   pytest "Captured" section is skipped; a timeout a later attempt got past
   is vetoed by its rule (``_patterns._superseded``); a timeout whose
   traceback a log line calls retried is kept aside (tier ``RETRIED``).
3. Without a root cause, consequence rules (test summaries, "no tests ran")
   decide; then a retried timeout kept aside; without those, nothing does and
   the answer is ``pattern=None``, which sends the failure to the Doctor.

No I/O, no clock, no trio: callers may run it in a worker thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from autopack.protocol import Classification, ClassifyContext

from ._mitigations import mitigation_for
from ._patterns import (
    NOT_ROOT,
    QUOTED,
    ROOT,
    RULES,
    STEMS,
    Rule,
    crashed_after,
    normalize_details,
    quoted_source,
)
from ._summary import find_all, line_at, plain_text
from ._text import Scan, clean_line, iter_lines_reversed

_MAX_LINE = 4000  # confirm at most this much of one line (minified bundles, base64 dumps)
_MAX_CANDIDATES = 250_000
_MAX_EVIDENCE = 500
_DEAD_MAX = 100_000  # distinct dead lines remembered per call (bounds memory on a huge log)
_CHUNK = 1 << 20
RETRIED = 2  # a root-cause hit a log line called retried (``details["retried"]``): the last resort  # scan this much text (to the next line end) before confirming its candidates


def _scans(stems: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """One regex per first character of the stems: ``re`` searches a literal first character fast."""
    by_first: dict[str, list[str]] = {}
    for stem in stems:
        by_first.setdefault(stem[0], []).append(stem[1:])
    return tuple(
        re.compile(re.escape(c) + "(?:" + "|".join(re.escape(t) for t in sorted(tails, key=len, reverse=True)) + ")")
        for c, tails in by_first.items()
    )


SCANS = _scans(STEMS)
assert len(SCANS) < 32  # a scan's index fits in the low 5 bits of a candidate


def _literal_scans(stems: tuple[str, ...]) -> dict[int, str]:
    """Scan index → its stem, for the scans of a single stem.

    Those are searched with ``str.find``: ``re`` walks a pattern that starts with a
    multi-character literal several times slower than ``str.find``'s fast search.
    """
    by_first: dict[str, list[str]] = {}
    for stem in stems:
        by_first.setdefault(stem[0], []).append(stem)
    return {g: group[0] for g, group in enumerate(by_first.values()) if len(group) == 1}


_LITERAL_SCANS = _literal_scans(STEMS)
assert all(SCANS[g].fullmatch(lit) for g, lit in _LITERAL_SCANS.items())


def _rules_by_stem() -> dict[str, tuple[int, ...]]:
    """Stem → indices of the rules one of whose words contains it (every word must contain one)."""
    out: dict[str, list[int]] = {s: [] for s in STEMS}
    for i, rule in enumerate(RULES):
        for word in rule.stems:
            covering = [s for s in STEMS if s in word]
            if not covering:
                raise ValueError(f"rule word {word!r} ({rule.pid}) contains no scan stem")
            for s in covering:
                out[s].append(i)
    return {s: tuple(sorted(set(ix))) for s, ix in out.items()}


_RULES_BY_STEM = _rules_by_stem()
_CACHE_MAX = 4096


_Trie = dict[str, "_Trie"]


def trie_regex(literals: list[str] | set[str]) -> str:
    """One regex matching any of ``literals``, longest first, factored as a trie.

    ``re`` tries the alternatives of a plain ``a|b|c`` one after the other at
    every offset; a trie tries only the few that share the next character.
    """
    root: _Trie = {}
    for lit in literals:
        node = root
        for ch in lit:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: _Trie) -> str:
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if "" in node:
            return f"(?:{body})?"
        return body

    return emit(root)


class _Gate:
    """The rules worth trying on a line that holds stems of a given set of scans.

    A rule anchored at the line start with a literal prefix (``Rule.prefix``)
    is worth trying only when the line starts with it: one trie regex of all
    those prefixes is matched at offset 0. Any other rule has ``need``
    literals one of which every match contains: one trie regex of them is
    searched in the line, resuming one character after each find, so every
    literal present is seen (a shorter one found at the same offset is a
    prefix of the longer one). The rules so selected are tried in table
    order; rules with neither are always tried.
    """

    __slots__ = ("_always", "_by_literal", "_by_prefix", "_cache", "_match", "_search")

    def __init__(self, idx: list[int]) -> None:
        pre = [i for i in idx if RULES[i].prefix]
        lit = [i for i in idx if not RULES[i].prefix and RULES[i].need]
        self._always = tuple(i for i in idx if not RULES[i].prefix and not RULES[i].need)
        prefixes = {p for i in pre for p in RULES[i].prefix}
        literals = {n for i in lit for n in RULES[i].need}
        self._match = re.compile(trie_regex(prefixes)).match if prefixes else None
        self._search = re.compile(trie_regex(literals)).search if literals else None
        self._by_prefix = {h: tuple(i for i in pre if any(h.startswith(p) for p in RULES[i].prefix)) for h in prefixes}
        self._by_literal = {h: tuple(i for i in lit if any(n in h for n in RULES[i].need)) for h in literals}
        self._cache: dict[tuple[str, frozenset[str]], tuple[Rule, ...]] = {}

    def rules(self, line: str) -> tuple[Rule, ...]:
        head = ""
        if self._match is not None:
            m = self._match(line)
            if m is not None:
                head = m.group()
        found: list[str] = []
        search = self._search
        if search is not None:
            m = search(line)
            while m is not None:
                found.append(m.group())
                m = search(line, m.start() + 1)
        if not head and not found and not self._always:
            return ()
        key = (head, frozenset(found))
        rules = self._cache.get(key)
        if rules is None:
            idx = set(self._always)
            idx.update(self._by_prefix.get(head, ()))
            for h in key[1]:
                idx.update(self._by_literal[h])
            rules = tuple(RULES[i] for i in sorted(idx))
            if len(self._cache) < _CACHE_MAX:
                self._cache[key] = rules
        return rules


class _Gates(dict[int, _Gate]):
    """Bit set of scan indices → the gate over the rules of all those scans' stems."""

    def __missing__(self, groups: int) -> _Gate:
        stems = [st for g, rx in enumerate(SCANS) if groups >> g & 1 for st in STEMS if rx.fullmatch(st)]
        gate = _Gate(sorted({i for st in stems for i in _RULES_BY_STEM[st]}))
        self[groups] = gate
        return gate


_GATES = _Gates()


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


def candidates(text: str, lo: int, hi: int) -> list[int]:
    """Sorted ``offset << 5 | scan index`` for every stem start in ``text[lo:hi]`` (``hi`` at a line end)."""
    hits: list[int] = []
    for g, rx in enumerate(SCANS):
        literal = _LITERAL_SCANS.get(g)
        if literal is None:
            hits.extend([m.start() << 5 | g for m in rx.finditer(text, lo, hi)])
            continue
        find = text.find
        p = find(literal, lo, hi)
        while p >= 0:
            hits.append(p << 5 | g)
            p = find(literal, p + 1, hi)
    hits.sort()
    return hits


def scan(sc: Scan) -> tuple[Hit | None, list[Hit]]:
    """Walk the output once; return the first root-cause hit and the consequence hits before it.

    The text is scanned a chunk at a time (about 1 MB, cut at a line end): the
    stem regexes find the candidate offsets of the chunk, and the candidate
    lines are confirmed in order, so a root cause in the first chunk ends the
    work without scanning the rest.
    """
    text = sc.text
    gates = _GATES
    summaries: list[Hit] = []
    size = len(text)
    budget = _MAX_CANDIDATES
    # Lines no rule's regex matched: logs repeat their noise ("# fail 0", pip's resolver
    # notice, a retry warning), so a line seen once is not confirmed again. Only the
    # line's text decides this (the stems found in it, its gate, its rules' regexes);
    # a line where a rule matched but its context check said no is not remembered.
    dead: set[str] = set()
    lo = 0
    while lo < size:
        hi = text.find("\n", lo + _CHUNK)
        hi = size if hi < 0 else hi + 1
        hits = candidates(text, lo, hi)
        nhits = len(hits)
        i = 0
        while i < nhits:
            p = hits[i] >> 5
            groups = 1 << (hits[i] & 31)
            i += 1
            budget -= 1
            if budget < 0:
                return None, summaries
            s = text.rfind("\n", 0, p) + 1
            e = text.find("\n", p)
            if e < 0:
                e = size
            while i < nhits and hits[i] >> 5 < e:  # the line's other stems
                groups |= 1 << (hits[i] & 31)
                i += 1
            raw = text[s:e] if e - s <= _MAX_LINE else None
            if raw is not None and raw in dead:
                continue
            line = clean_line(text[s : s + _MAX_LINE] if raw is None else raw)
            if not line:
                continue
            rules = gates[groups].rules(line)
            if not rules or QUOTED.match(line):
                if raw is not None and len(dead) < _DEAD_MAX:
                    dead.add(raw)
                continue
            hit = _confirm(rules, line, sc, s, e, NOT_ROOT.match(line) is not None)
            if hit is None or hit is False:
                if hit is False and raw is not None and len(dead) < _DEAD_MAX:
                    dead.add(raw)
                continue
            if hit.tier == ROOT:
                if sc.in_captured_output(s) or quoted_source(sc, s, e, line):
                    continue
                # a timeout a log line called retried decides only if nothing else does
                if hit.details.get("retried"):
                    hit.tier = RETRIED
                    if len(summaries) < 500:
                        summaries.append(hit)
                    continue
                return hit, summaries
            if len(summaries) < 500:
                summaries.append(hit)
        lo = hi
    return None, summaries


def _confirm(
    rules: tuple[Rule, ...], line: str, sc: Scan, s: int, e: int, no_root: bool = False
) -> Hit | Literal[False] | None:
    """The first rule's hit on ``line``; ``None`` when a rule's regex matched but its
    context check said no; ``False`` when no rule's regex matched at all."""
    matched = False
    for rule in rules:
        if no_root and rule.tier == ROOT:
            continue
        mm = rule.rx.search(line)
        if mm is None:
            continue
        matched = True
        assert rule.post is not None
        verdict = rule.post(mm, line, sc, s, e)
        if verdict is None:
            continue
        pid, details = verdict
        return Hit(pid, rule.tier, s, e, line, normalize_details(details))
    return None if matched else False


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


def _retried(text: str, hits: list[Hit]) -> tuple[str, list[str], dict[str, Any]] | None:
    """The first root cause a log line called retried, when nothing else decided
    and the program did not crash of something else afterwards."""
    for h in hits:
        if h.tier == RETRIED:
            if crashed_after(text, h.end):
                return None
            return h.pattern, [_clip(h.line)], h.details
    return None


def _zero_tests(text: str) -> tuple[str, list[str], dict[str, Any]] | None:
    """``no_tests_collected`` when the runners' own summaries say nothing ran (exit 0 or not).

    Only the closing run counts (the trailing summaries of the last runner seen).
    This catches the runs that "succeed" without testing anything: unittest's
    ``Ran 0 tests ... OK`` (Python 3.11), ``cargo test`` with a filter that
    matches nothing, ``node --test`` finding no files, ``jest
    --passWithNoTests``, ``go test`` on packages without tests.
    """
    plain = plain_text(text)
    found = find_all(plain)
    if not found:
        return None
    # The closing run: the trailing summaries of the last runner (cargo prints one per
    # test binary, go one per package); an earlier step's passing run does not count.
    last = found[-1].runner
    closing = []
    for f in reversed(found):
        if f.runner != last:
            break
        closing.append(f)
    if any(f.ran or f.failed for f in closing):
        return None
    return "no_tests_collected", [_clip(line_at(plain, found[-1].pos))], {"runner": last, "ran": 0}


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
            decided = _summarize(text, summaries) or _zero_tests(text) or _retried(text, summaries)
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
    details = _relative_file(details, ctx.repo_root)
    return Classification(
        pattern=pattern,
        evidence=evidence,
        details=details,
        mitigation=mitigation_for(pattern, details, ctx),
    )


def _relative_file(details: dict[str, Any], root: str | None) -> dict[str, Any]:
    """A file inside the repository is named relative to its root: that is how the Builder
    (and a person) refers to it, and it does not depend on where the worktree lives."""
    path = details.get("file")
    if not root or not isinstance(path, str) or not path.startswith("/"):
        return details
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        return details
    return {**details, "file": path[len(prefix):]}


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
