"""Plan normalization: from a plan a person wrote to a run spec they can review.

Pure and deterministic: no LLM, no network, no subprocess; the only I/O is
reading the plan file and listing the target repository's files (once per
call). Same input, same output.

Theory of operation:

1. :func:`._plan_text._lex` turns Markdown or plain text into blocks, and
   :func:`._plan_text._sections` groups them under classified headings (goal,
   constraints, non-goals, acceptance, checks, phases, notes, other).
2. :func:`_pick_phases` chooses the strongest phase structure present, in
   order: explicit step markers, a "Phases/Steps/Plan/Tasks" section, several
   unclassified headings, top-level list items, paragraphs, sentences.
3. Each phase gets an id (ASCII slug of its title), scope (paths the plan
   names, else repository paths matching its words, else the toolchain's
   source dirs), checks (commands the plan names, else the plan-level checks,
   else the toolchain's defaults), a kind, and a confidence with reasons.

Reading the text (words, blocks, sections, commands, paths) lives in
:mod:`._plan_text`; this module decides and scores. The result always passes
:func:`autopack.protocol.validate_spec`.
"""

from __future__ import annotations

import logging
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from autopack.protocol import RunSpec, SpecError, spec_to_builtins, validate_spec

from ._errors import PlanError as PlanError
from ._plan_text import (
    _ACTION_VERBS,
    _EDIT_VERBS,
    _RUN_VERBS,
    _STOP,
    _TEST_WORDS,
    _TICK_RE,
    _Block,
    _commands_in_code,
    _commands_in_text,
    _has_action,
    _lex,
    _paths_in_text,
    _Section,
    _sections,
    _sentences,
    _slug,
    _words,
)
from ._toolchain import default_checks, detect_toolchains

LOGGER = logging.getLogger(__name__)

__all__ = [
    "NormalizeResult",
    "PhaseReport",
    "PlanError",
    "normalize_file",
    "normalize_plan",
    "normalize_result_json",
    "result_from_raw_spec",
]

DEFAULT_MAX_BYTES = 1024 * 1024
MAX_REPO_FILES = 200_000


class PhaseReport(msgspec.Struct, frozen=True, kw_only=True):
    """How sure the normalizer is of one phase, and why."""

    id: str
    confidence: float
    reasons: list[str]


class NormalizeResult(msgspec.Struct, frozen=True, kw_only=True):
    """A normalized plan: the validated spec, overall confidence, warnings for every
    guess, per-phase reports, and whether confidence is below the threshold."""

    spec: RunSpec
    confidence: float
    warnings: list[str]
    phases: list[PhaseReport]
    below_threshold: bool


# ----------------------------------------------------------------- phases

@dataclass
class _Draft:
    title: str
    details: list[_Block]
    structure: float
    structure_reason: str
    heading_level: int = 0
    lead: str = ""


_PHASE_CAPABLE = ("preamble", "other", "phases", "step", "phase_heading")


def _collect_items(blocks: list[_Block], structure: float, why: str) -> list[_Draft]:
    """Top-level list items become phases; deeper items, paragraphs and code are details."""
    drafts: list[_Draft] = []
    items = [b for b in blocks if b.kind == "item"]
    if not items:
        return drafts
    top = min(b.level for b in items)
    for b in blocks:
        if b.kind == "item" and b.level <= top + 1:
            s = structure + (0.1 if b.numbered or b.checkbox else 0.0)
            drafts.append(_Draft(b.text, [], min(s, 1.0), why, lead=b.lead))
        elif drafts:
            drafts[-1].details.append(b)
    return drafts


def _pick_phases(sections: list[_Section]) -> list[_Draft]:
    capable = [s for s in sections if s.kind in _PHASE_CAPABLE]
    # 1. explicit "Phase N:" / "Step N:" markers anywhere (headings, lines, items)
    if any(s.kind == "step" for s in capable) or any(
            b.step for s in capable for b in s.blocks):
        drafts: list[_Draft] = []
        for s in sections:
            if s.kind == "step" and s.heading is not None:
                drafts.append(_Draft(s.heading.text, [], 1.0, "explicit step heading",
                                     s.heading.level, s.heading.lead))
            elif s.kind not in _PHASE_CAPABLE:
                continue
            elif drafts and s.heading is not None and s.heading.level > drafts[-1].heading_level:
                drafts[-1].details.append(s.heading)  # a sub-heading inside a step
            for b in s.blocks:
                if b.step:
                    drafts.append(_Draft(b.text, [], 1.0, "explicit step marker", 99, b.lead))
                elif drafts:
                    drafts[-1].details.append(b)
        return drafts
    # 2. a "Phases" / "Steps" / "Plan" / "Tasks" section
    containers = [s for s in sections if s.kind in ("phases", "phase_heading")]
    if containers:
        if any(s.kind == "phase_heading" for s in containers):
            return [_Draft(s.heading_text, s.blocks, 0.9, "sub-heading of the plan's phases "
                           "section") for s in containers if s.kind == "phase_heading"]
        blocks = [b for s in containers for b in s.blocks]
        drafts = _collect_items(blocks, 0.85, "item of the plan's phases section")
        if drafts:
            return drafts
        return [_Draft(b.text, [], 0.7, "paragraph of the plan's phases section")
                for b in blocks if b.kind == "para"]
    # 3. several unclassified headings
    others = [s for s in capable if s.kind == "other" and s.blocks]
    if len(others) >= 2:
        return [_Draft(s.heading_text, s.blocks, 0.75, "section heading") for s in others]
    # 4. list items, 5. paragraphs, 6. sentences
    blocks = [b for s in capable for b in ([s.heading] if s.kind == "other" and s.heading
                                          else []) + s.blocks]
    drafts = _collect_items([b for b in blocks if b.kind != "heading"], 0.65, "list item")
    if drafts:
        return drafts
    paras = [b for b in blocks if b.kind == "para"]
    if len(paras) >= 2:
        return [_Draft(b.text, [], 0.5, "paragraph") for b in paras]
    if paras:
        sentences = _sentences(paras[0].text)
        if len(sentences) > 1:
            return [_Draft(s, [], 0.35, "sentence of a paragraph") for s in sentences]
        return [_Draft(paras[0].text, [], 0.4, "the plan's only paragraph")]
    return []


# ------------------------------------------------------------- repo index

_INDEX_SKIP = frozenset({".git", "node_modules", ".venv", "venv", "__pycache__", ".tox", ".nox",
                         ".mypy_cache", ".pytest_cache", ".ruff_cache", "dist", "build", "target",
                         ".idea", ".vscode", ".eggs", "site-packages"})


_CAMEL_RE = re.compile(r"([a-z0-9])([A-Z])")


class _RepoIndex:
    """The repository's files, listed once, with an index from name words to paths."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.files: list[str] = []
        self.dirs: set[str] = set()
        self.by_word: dict[str, list[str]] = {}
        stack = [""]
        while stack and len(self.files) < MAX_REPO_FILES:
            rel = stack.pop()
            try:
                # Unsorted: every answer drawn from the index is sorted where it is made.
                entries = list(os.scandir(repo / rel if rel else repo))
            except OSError:
                continue
            for e in entries:
                path = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    if e.name not in _INDEX_SKIP and not e.name.startswith("."):
                        self.dirs.add(path)
                        self._add_words(e.name, path + "/**")
                        stack.append(path)
                else:
                    self.files.append(path)
                    self._add_words(e.name.rsplit(".", 1)[0] if "." in e.name else e.name, path)
        self.files.sort()
        self.toolchains = detect_toolchains(repo)
        self.source_dirs = [d for tc in self.toolchains for d in tc.source_dirs]
        self._checks: tuple[list[str], list[str]] | None = None

    def _add_words(self, name: str, target: str) -> None:
        spaced = _CAMEL_RE.sub(r"\1 \2", name) if not name.islower() else name
        for w in set(_words(spaced)):
            if len(w) >= 3:
                self.by_word.setdefault(w, []).append(target)

    def exists(self, rel: str) -> bool:
        return rel in self.dirs or (self.repo / rel).exists()

    def checks(self) -> tuple[list[str], list[str]]:
        if self._checks is None:
            self._checks = default_checks(self.repo)
        return self._checks

    def test_dirs(self) -> list[str]:
        return [d for d in ("tests", "test", "__tests__", "spec") if d in self.dirs]

    def match(self, words: list[str]) -> list[str]:
        """Repo paths (``dir/**`` or files) whose names share the most words with ``words``."""
        score: dict[str, int] = {}
        limit = max(12, len(self.files) // 50)
        for w in dict.fromkeys(words):
            if w in _STOP or w in _ACTION_VERBS or len(w) < 3:
                continue
            hits = self.by_word.get(w) or self.by_word.get(w.rstrip("s")) or []
            if len(hits) > limit:
                continue  # too common a word to say anything
            for t in hits:
                score[t] = score.get(t, 0) + 1
        if not score:
            return []
        best = max(score.values())
        chosen = sorted(t for t, s in score.items() if s == best)
        dirs = [t for t in chosen if t.endswith("/**")]
        chosen = [t for t in chosen if t in dirs or not any(t.startswith(d[:-2]) for d in dirs)]
        return chosen[:10]


# ------------------------------------------------------------- assembling

@dataclass
class _Ctx:
    index: _RepoIndex | None
    plan_checks: list[str]
    warnings: list[str] = field(default_factory=list)


def _phase_text(d: _Draft) -> tuple[str, list[str]]:
    """The phase goal text (title + details) and the commands it names."""
    lines = [d.title]
    cmds = _commands_in_text(d.title)
    for b in d.details:
        if b.kind == "code":
            lines.append(f"```{b.lang}\n{b.text}\n```")
            cmds += _commands_in_code(b)
        elif b.kind == "item":
            lines.append("  " * (b.level // 2) + "- " + b.text)
            cmds += _commands_in_text(b.text)
        else:
            lines.append(b.text)
            cmds += _commands_in_text(b.text)
    return "\n".join(lines).strip(), list(dict.fromkeys(cmds))


def _prose(goal: str, cmds: list[str]) -> str:
    """The goal without its commands and code spans: what the person asked in words."""
    for c in cmds:
        goal = goal.replace(c, " ")
    return _TICK_RE.sub(" ", re.sub(r"```.*?```", " ", goal, flags=re.DOTALL))


def _scope_of(goal: str, cmds: list[str], ctx: _Ctx) -> tuple[list[str], float, str]:
    idx = ctx.index
    paths = _paths_in_text(goal, idx, cmds)
    wants_tests = any(w in _TEST_WORDS for w in _words(_prose(goal, cmds)))
    scope: list[str] = []
    for p in paths:
        if p.endswith("/") or (idx is not None and p in idx.dirs):
            p = p.rstrip("/") + "/**"
        elif "/" not in p and "*" not in p and idx is not None and p not in idx.files:
            p = "**/" + p  # a bare file name somewhere in the tree
        scope.append(p)
    if scope:
        if wants_tests and idx is not None:
            scope += [f"{t}/**" for t in idx.test_dirs()
                      if not any(s.startswith(t + "/") for s in scope)]
        return list(dict.fromkeys(scope)), 1.0, "scope: paths named in the plan"
    if idx is None:
        return [], 0.1, "no scope found and no repository given: the phase may touch any file"
    matched = idx.match(_words(goal))
    if matched:
        if wants_tests:
            matched += [f"{t}/**" for t in idx.test_dirs()]
        return list(dict.fromkeys(matched)), 0.6, (
            "scope: repository paths matching the phase's words (guessed)")
    if idx.source_dirs:
        return [f"{d}/**" if d != "." else "**" for d in dict.fromkeys(idx.source_dirs)], 0.3, (
            "no scope found, using the toolchain's source dirs")
    return [], 0.1, "no scope found and no toolchain source dirs: the phase may touch any file"


def _checks_of(goal: str, cmds: list[str], ctx: _Ctx) -> tuple[list[str], float, str]:
    if cmds:
        return cmds, 1.0, "checks: commands named in the phase"
    if ctx.plan_checks:
        return list(ctx.plan_checks), 0.8, "checks: the plan's own checks"
    if ctx.index is not None:
        checks, why = ctx.index.checks()
        if checks:
            return checks, 0.4, "no checks named, using the toolchain's: " + "; ".join(why)
    return [], 0.2, "no checks named and none detected: the daemon detects them at run time"


def _kind_of(title: str, goal: str, cmds: list[str]) -> str:
    """``command`` when the phase only asks to run something, else ``build``."""
    prose = _prose(goal, cmds)
    if any(w in _EDIT_VERBS for w in _words(prose)):
        return "build"
    if cmds and (title.strip().strip("`").strip() in cmds or not _has_action(prose)):
        return "command"  # nothing but commands to run
    runs = False
    for line in [title, *prose.split("\n")[1:]]:
        words = _words(line)
        # "Run the tests", and German infinitives at the end: "Tests ausführen"
        if words and (words[0] in _RUN_VERBS or words[-1] in _RUN_VERBS):
            runs = True
    wants_tests = any(w in _TEST_WORDS | {"suite", "build", "benchmarks", "lint"}
                      for w in _words(goal))
    return "command" if runs and (cmds or wants_tests) else "build"


def _build_phase(n: int, d: _Draft, ctx: _Ctx, seen: set[str]) -> tuple[dict[str, Any],
                                                                        PhaseReport, bool]:
    goal, cmds = _phase_text(d)
    kind = _kind_of(d.title, goal, cmds)
    pid = base = _slug(d.lead or d.title, n)
    k = 2
    while pid in seen:
        pid, k = f"{base}-{k}", k + 1
    seen.add(pid)
    reasons = [f"structure: {d.structure_reason}"]
    actionable = _has_action(goal) or bool(cmds)
    goal_score = 1.0 if actionable else 0.5
    if len(_words(d.title)) < 2:
        goal_score -= 0.2
    reasons.append("goal: names an action" if actionable else "goal: no action verb found")
    if kind == "command":
        scope: list[str] = []
        s_score, s_why = 1.0, "command phase: runs checks only, changes nothing"
    else:
        scope, s_score, s_why = _scope_of(goal, cmds, ctx)
    tests = ctx.index.checks()[0] if ctx.index else []
    if kind == "command" and not cmds and tests:  # "run the tests" → the toolchain's tests
        checks, c_score, c_why = tests, 0.7, (
            "checks: the toolchain's test command, as the phase asks to run the tests")
    else:
        checks, c_score, c_why = _checks_of(goal, cmds, ctx)
    reasons += [s_why, c_why]
    if s_score < 1.0:
        ctx.warnings.append(f"phase {pid!r}: {s_why}" + (f" ({', '.join(scope)})" if scope else ""))
    if c_score < 0.7:
        ctx.warnings.append(f"phase {pid!r}: {c_why.split(':')[0]}"
                            + (f" ({'; '.join(checks)})" if checks else ""))
    conf = round(0.1 * d.structure + 0.1 * max(goal_score, 0.0) + 0.4 * s_score
                 + 0.4 * c_score, 3)
    phase: dict[str, Any] = {"id": pid, "goal": goal, "kind": kind, "scope": scope,
                             "checks": checks}
    ok = actionable or bool(scope and s_score == 1.0) or d.structure >= 0.85
    return phase, PhaseReport(id=pid, confidence=conf, reasons=reasons), ok


def _section_items(s: _Section) -> list[str]:
    items = [b.text for b in s.blocks if b.kind in ("item", "para") and b.text]
    if s.kind == "must_not":
        lead = "Do not" if _words(s.heading_text)[:1] in (["dont"], ["don"], ["do"]) else (
            s.heading_text.strip(" :").capitalize())
        neg = re.compile(r"^(not|no|never|don'?t|do not|must not|avoid)\b", re.IGNORECASE)
        items = [t if neg.match(t) else f"{lead} {t[:1].lower()}{t[1:]}" for t in items]
    return items


def normalize_plan(text: str, repo: Path | None = None, *,
                   threshold: float = 0.6) -> NormalizeResult:
    """Turn a Markdown or plain-text plan into a validated run spec with confidence.

    ``repo`` (optional) is the target git repository: it is used to match
    scope to existing paths and to detect default checks; its file list is
    read once. Returns a :class:`NormalizeResult`; ``below_threshold`` is true
    when the overall confidence is under ``threshold``. Raises
    :class:`PlanError` when the plan has nothing actionable or ``repo`` is not
    a git repository. Deterministic: same input, same output.
    """
    if repo is not None:
        _check_repo(repo)
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    title, sections = _sections(_lex(text))
    fields: dict[str, list[str]] = {}
    for s in sections:
        for b in s.blocks:
            if b.kind == "field":
                fields.setdefault(b.name, []).append(b.text)
    lists: dict[str, list[str]] = {}
    plan_cmds: list[str] = []
    for s in sections:
        if s.kind in ("goal", "constraints", "must_not", "non_goals", "acceptance", "checks"):
            lists.setdefault("constraints" if s.kind == "must_not" else s.kind, []).extend(
                _section_items(s))
        if s.kind in ("checks", "acceptance"):
            for b in s.blocks:
                plan_cmds += _commands_in_code(b) if b.kind == "code" else _commands_in_text(b.text)
    for f in fields.get("checks", []):
        plan_cmds += _commands_in_text(f) or [f.strip("`")]
    index = _RepoIndex(repo) if repo is not None else None
    ctx = _Ctx(index=index, plan_checks=list(dict.fromkeys(plan_cmds)))
    drafts = _pick_phases(sections)
    if not drafts:
        raise PlanError("nothing actionable in the plan: no phases, steps, list items or "
                        "instructions found")
    phases: list[dict[str, Any]] = []
    reports: list[PhaseReport] = []
    seen: set[str] = set()
    any_ok = False
    for n, d in enumerate(drafts, 1):
        phase, report, ok = _build_phase(n, d, ctx, seen)
        phases.append(phase)
        reports.append(report)
        any_ok = any_ok or ok
    if not any_ok:
        raise PlanError("nothing actionable in the plan: no step names an action, a command "
                        "or a path")
    goal_texts = fields.get("goal", []) + lists.get("goal", [])
    if goal_texts:
        goal, g_conf = " ".join(goal_texts), 1.0
        if title and _words(title) != _words(goal):
            goal = f"{title}: {goal}"
    elif title:
        goal, g_conf = title, 0.8
        intro = next((b.text for b in sections[0].blocks if b.kind == "para"), "")
        if intro and not any(d.title in intro for d in drafts):
            goal = f"{title}: {intro[:500]}"  # the paragraph under the title says why
    else:
        goal, g_conf = "; ".join(p["goal"].split("\n")[0].rstrip(".")
                                 for p in phases)[:500], 0.3
        ctx.warnings.insert(0, "no goal stated: the run goal is derived from the phases")
    raw: dict[str, Any] = {
        "goal": goal, "phases": phases,
        "constraints": fields.get("constraints", []) + lists.get("constraints", []),
        "non_goals": fields.get("non_goals", []) + lists.get("non_goals", []),
        "acceptance": fields.get("acceptance", []) + [
            a for a in lists.get("acceptance", []) + lists.get("checks", [])],
    }
    if repo is not None:
        raw["repo"] = str(repo)
    spec = validate_spec(raw)
    confidence = round(0.8 * statistics.fmean(r.confidence for r in reports) + 0.2 * g_conf, 3)
    below = confidence < threshold
    if below:
        ctx.warnings.append(
            f"confidence {confidence:.2f} is below the threshold {threshold:.2f}: edit the plan "
            "(name the paths each step may change and the commands that check it) or edit the "
            "spec before submitting")
    return NormalizeResult(spec=spec, confidence=confidence, warnings=ctx.warnings,
                           phases=reports, below_threshold=below)


def _check_repo(repo: Path) -> None:
    if not repo.is_dir():
        raise PlanError(f"repository path {str(repo)!r} is not a directory")
    if not (repo / ".git").exists():
        raise PlanError(f"repository path {str(repo)!r} is not a git repository (no .git)")


def normalize_file(path: str, repo: str | None, *, max_bytes: int = DEFAULT_MAX_BYTES,
                   threshold: float = 0.6) -> NormalizeResult:
    """Read the plan at ``path`` and :func:`normalize_plan` it against ``repo``.

    Raises :class:`PlanError` for an unreadable, empty, binary or too large
    file (over ``max_bytes``), a plan with nothing actionable, or a ``repo``
    that is not a git repository.
    """
    repo_path = Path(os.path.abspath(repo)) if repo is not None else None
    if repo_path is not None:
        _check_repo(repo_path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise PlanError(f"cannot read plan {path!r}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise PlanError(f"plan {path!r} is larger than the limit of {max_bytes} bytes")
    if b"\0" in data[:8192]:
        raise PlanError(f"plan {path!r} is a binary file, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PlanError(f"plan {path!r} is not UTF-8 text") from None
    if not text.strip():
        raise PlanError(f"plan {path!r} is empty")
    return normalize_plan(text, repo_path, threshold=threshold)


def normalize_result_json(result: NormalizeResult) -> dict[str, Any]:
    """The spec as in DESIGN.md's run spec, plus ``confidence``, ``warnings``,
    ``phases_confidence`` (per-phase id, confidence, reasons) and ``below_threshold``."""
    out: dict[str, Any] = dict(spec_to_builtins(result.spec))
    out["confidence"] = result.confidence
    out["warnings"] = list(result.warnings)
    out["phases_confidence"] = [msgspec.to_builtins(r) for r in result.phases]
    out["below_threshold"] = result.below_threshold
    return out


def result_from_raw_spec(raw: Any, *, repo: str | None, threshold: float = 0.6,
                         source: str = "the LLM") -> NormalizeResult:
    """Validate a spec filled by someone else (the LLM through the run spec's JSON
    schema) exactly like a hand-written one, and score it like ours.

    ``repo`` (if given) replaces the spec's repo and is used to check that the
    scope names existing paths. Raises :class:`PlanError` when the spec is invalid.
    """
    if isinstance(raw, dict) and repo is not None:
        raw = {**raw, "repo": repo}
    try:
        spec = validate_spec(raw)
    except SpecError as exc:
        raise PlanError(f"the spec from {source} is invalid: {exc}") from None
    index = _RepoIndex(Path(repo)) if repo is not None else None
    warnings = [f"the spec was filled by {source}: review every field"]
    reports: list[PhaseReport] = []
    for p in spec.phases:
        reasons = [f"structure: filled by {source}"]
        goal_score = 1.0 if _has_action(p.goal) or p.kind == "command" else 0.5
        if p.kind == "command":
            s_score = 1.0
        elif not p.scope:
            s_score = 0.1
            warnings.append(f"phase {p.id!r}: no scope: the phase may touch any file")
        else:
            roots = [re.split(r"[*?\[]", g, maxsplit=1)[0].rstrip("/") for g in p.scope]
            known = index is None or all(not r or index.exists(r) or index.exists(
                r.rsplit("/", 1)[0]) for r in roots if "/" in r)
            s_score = 1.0 if known else 0.6
            if not known:
                warnings.append(f"phase {p.id!r}: scope names paths not in the repository")
        c_score = 0.8 if p.checks else 0.2
        if not p.checks:
            warnings.append(f"phase {p.id!r}: no checks: the daemon detects them at run time")
        reasons += [f"scope score {s_score:.1f}", f"checks score {c_score:.1f}"]
        conf = round(0.05 + 0.1 * goal_score + 0.4 * s_score + 0.4 * c_score, 3)
        reports.append(PhaseReport(id=p.id, confidence=conf, reasons=reasons))
    confidence = round(0.8 * statistics.fmean(r.confidence for r in reports) + 0.2, 3)
    below = confidence < threshold
    if below:
        warnings.append(f"confidence {confidence:.2f} is below the threshold {threshold:.2f}: "
                        "edit the spec before submitting")
    return NormalizeResult(spec=spec, confidence=confidence, warnings=warnings, phases=reports,
                           below_threshold=below)
