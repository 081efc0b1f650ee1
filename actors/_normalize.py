"""Plan normalization: from a plan a person wrote to a run spec they can review.

Pure and deterministic: no LLM, no network, no subprocess; the only I/O is
reading the plan file and listing the target repository's files (once per
call). Same input, same output.

Theory of operation:

1. :func:`_lex` turns Markdown or plain text into blocks — headings (ATX,
   setext, and plain ``Label:`` lines), list items (bullets, numbers,
   checkboxes, with their indentation), fenced code, paragraphs, ``Goal: …``
   style fields and ``Phase N:`` / ``Step N:`` markers.
2. :func:`_sections` classifies headings by their words (goal, constraints,
   non-goals, acceptance, checks, phases, notes, other) and groups blocks.
3. :func:`_pick_phases` chooses the strongest phase structure present, in
   order: explicit step markers, a "Phases/Steps/Plan/Tasks" section, several
   unclassified headings, top-level list items, paragraphs, sentences.
4. Each phase gets an id (ASCII slug of its title), scope (paths the plan
   names, else repository paths matching its words, else the toolchain's
   source dirs), checks (commands the plan names, else the plan-level checks,
   else the toolchain's defaults), a kind, and a confidence with reasons.

The result always passes :func:`autopack.protocol.validate_spec`.
"""

from __future__ import annotations

import logging
import os
import re
import statistics
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from autopack.protocol import AutopackError, RunSpec, SpecError, spec_to_builtins, validate_spec

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


class PlanError(AutopackError):
    """Raised by :func:`normalize_plan` / :func:`normalize_file` for a plan that cannot
    become a run spec (empty, binary, too large, unreadable, nothing actionable, or a
    target repository that is not a git repository). ``message`` is one line for people."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


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


# ------------------------------------------------------------------ words

_TRANSLIT = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe",
                           "Œ": "OE", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th",
                           "ð": "d", "ı": "i"})


def _fold(text: str) -> str:
    """ASCII-fold: strip accents, transliterate a few letters, drop the rest."""
    if text.isascii():
        return text  # the common case, and the hot one (every repo file name)
    text = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    return "".join(c for c in text if not unicodedata.combining(c)).encode(
        "ascii", "ignore").decode()


_WORD_RE = re.compile(r"[a-z0-9]+")
_CAMEL_RE = re.compile(r"([a-z0-9])([A-Z])")


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(_fold(text).lower())


_STOP = frozenset("""a an the to of for and or in on with into from by at as is are be been that
this it its all any each so then than via per not no new use using sure should must will can
der die das den dem des und oder mit fur zu im ein eine einen auf von le la les des du de et ou
pour avec un une dans sur el los las y para con en por que""".split())
_EDIT_VERBS = frozenset("""add implement create write fix change update remove delete refactor
rename move modify edit replace introduce extract migrate rewrite split merge port convert wire
expose support handle extend adapt adjust document upgrade bump drop clean simplify improve
optimize hinzufugen fuge erganzen erganze implementieren implementiere erstellen erstelle schreiben
schreibe entfernen entferne loschen losche andern andere aktualisieren aktualisiere anpassen passe
beheben behebe korrigieren korrigiere umbenennen verschieben ajouter ajoute implementer implemente
creer cree ecrire ecris supprimer supprime modifier modifie corriger corrige remplacer remplace
renommer deplacer mettre anadir agregar crear escribir eliminar corregir actualizar""".split())
_RUN_VERBS = frozenset("""run rerun execute verify check lint benchmark ausfuhren fuhre starte
starten prufen prufe lancer lance executer execute verifier ejecutar ejecuta""".split())
_ACTION_VERBS = _EDIT_VERBS | _RUN_VERBS | frozenset("""make ensure test build install configure
set setup deploy release publish generate log cache validate parse return raise emit print show
teste baue installiere konfiguriere tester construire installer configurer probar""".split())
_TEST_WORDS = frozenset("test tests testing unittest unittests testsuite pytest spec specs".split())


def _slug(title: str, n: int) -> str:
    """Id for a phase: ASCII words of the title's first clause, without stop words."""
    head = re.split(r"\s*(?:[:;,(]|\s[-–—]\s|\.\s)", title, maxsplit=1)[0]
    # Prefer the words outside `code` and paths; a title that is little more than
    # code ("Run `make test`") keeps the code's words.
    plain = " ".join(t for t in _TICK_RE.sub(" ", head).split()
                     if "/" not in t and not re.search(r"\.[a-z]{1,5}$", t))
    words = _words(plain)
    if len(words) < 2:
        words = _words(head.replace("`", " ")) or _words(title.replace("`", " "))
    kept = [w for w in words if w not in _STOP] or words
    slug = ""
    for w in kept[:5]:
        if len(slug) + len(w) + 1 > 48:
            break
        slug = f"{slug}-{w}" if slug else w
    return slug or f"phase-{n}"


# ----------------------------------------------------------------- lexing

@dataclass
class _Block:
    kind: str  # heading | item | para | code | field | step
    text: str
    level: int = 0  # heading level, or list indentation
    lang: str = ""
    numbered: bool = False
    checkbox: bool = False
    step: bool = False  # a "Phase N:" / "Step N:" marker (removed from text)
    name: str = ""  # for fields: goal | constraints | ...
    lead: str = ""  # a leading **bold** phrase: the item's own title


_FENCE_RE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
_ATX_RE = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HR_RE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")
_ITEM_RE = re.compile(r"^(\s*)([-*+•]|\d{1,3}[.)])\s+(\[[ xX]\]\s+)?(.*)$")
_LABEL_RE = re.compile(r"^\s*([^\W\d_][\w' /-]{0,40}?)\s*:\s*$")
_FIELD_RE = re.compile(
    r"^\s*(goal|objective|intention|aim|ziel|objectif|constraints?|non[- ]?goals?|out of scope|"
    r"acceptance(?: criteria)?|definition of done|checks?)\s*:\s+(\S.*)$", re.IGNORECASE)
_STEP_RE = re.compile(
    r"^\s*(?:phase|step|stage|task|milestone|part|schritt|etappe|étape|etape|fase|paso|tâche|"
    r"tache)\s*#?\s*(\d{1,3}[a-z]?|[ivx]{1,5}|one|two|three|four|five|six|seven|eight|nine|ten)"
    r"(?:\s*[:.)\-–—]+\s*|\s+|$)(.*)$", re.IGNORECASE)


def _step_split(text: str) -> tuple[bool, str]:
    m = _STEP_RE.match(text)
    if not m:
        return False, text
    return True, m.group(2).strip() or text.strip()


def _lex(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(_Block("para", " ".join(s.strip() for s in para)))
            para.clear()

    lines = text.split("\n")
    i = 0
    while i < len(lines):
        raw = lines[i].expandtabs(4)
        # blockquotes read as plain text
        line = re.sub(r"^\s{0,3}>\s?", "", raw) if ">" in raw[:4] else raw
        stripped = line.strip()
        i += 1
        if m := _FENCE_RE.match(line):
            flush()
            fence, body = m.group(1), []
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i])
                i += 1
            i += 1
            blocks.append(_Block("code", "\n".join(body), lang=m.group(2).lower()))
            continue
        if not stripped:
            flush()
            continue
        if len(para) == 1 and re.fullmatch(r"=+|-+", stripped):  # setext heading
            blocks.append(_Block("heading", para.pop().strip(), level=1 if "=" in stripped else 2))
            continue
        if _HR_RE.match(line):
            flush()
            continue
        if m := _ATX_RE.match(line):
            flush()
            blocks.append(_Block("heading", m.group(2), level=len(m.group(1))))
            continue
        if m := _ITEM_RE.match(line):
            flush()
            blocks.append(_Block("item", m.group(4).strip(), level=len(m.group(1)),
                                 numbered=m.group(2)[0].isdigit(), checkbox=bool(m.group(3))))
            continue
        if blocks and blocks[-1].kind == "item" and not para and (
                raw.startswith(" ") or lines[i - 2].strip()):
            blocks[-1].text += " " + stripped  # continuation of the list item
            continue
        if not para and (m := _FIELD_RE.match(line)):
            blocks.append(_Block("field", m.group(2).strip(), name=_section_kind(m.group(1))))
            continue
        if not para and _STEP_RE.match(line):
            blocks.append(_Block("step", stripped))
            continue
        if not para and (m := _LABEL_RE.match(line)):
            blocks.append(_Block("heading", m.group(1), level=2))
            continue
        para.append(line)
    flush()
    for b in blocks:
        if b.kind in ("heading", "item", "step"):
            if m := re.match(r"^(\*\*|__)(.+?)\1", b.text):
                b.lead = _clean(m.group(2)).rstrip(":.")
            b.text = _clean(b.text)
            b.step, b.text = _step_split(b.text)
            b.step = b.step or b.kind == "step"
        elif b.kind in ("para", "field"):
            b.text = _clean(b.text)
    return blocks


def _clean(text: str) -> str:
    """Inline Markdown to text: links, images, HTML tags and emphasis markers go."""
    if "](" in text:
        text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
        text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    if "<" in text:
        text = re.sub(r"</?[A-Za-z][^>]*>", "", text)
    if "*" in text or "__" in text or "~~" in text:
        text = re.sub(r"(\*\*|__|~~)(.+?)\1", r"\2", text)
        text = re.sub(r"(?<![\w*])\*(?!\s)([^*]+?)(?<!\s)\*(?![\w*])", r"\1", text)
    return " ".join(text.split())


# --------------------------------------------------------------- sections

_SECTION_WORDS: list[tuple[str, tuple[str, ...]]] = [
    ("non_goals", ("non goal", "nongoal", "non-goal", "out of scope", "not in scope", "wont do",
                   "won t do", "will not", "nicht ziel", "nicht im umfang", "hors perimetre",
                   "hors scope", "fuera de alcance")),
    ("must_not", ("must not", "dont", "don t", "do not", "never", "avoid")),
    ("constraints", ("constraint", "guardrail", "restriction", "limitation", "rules",
                     "einschrankung", "randbedingung", "contrainte", "restriccion")),
    ("acceptance", ("acceptance", "definition of done", "done when", "success criteria",
                    "akzeptanz", "critere", "criterio")),
    ("checks", ("checks", "check", "verification", "verify", "validation", "testing",
                "how to test", "how to verify", "prufung", "verifikation")),
    ("phases", ("phases", "steps", "plan", "tasks", "milestones", "implementation", "todo",
                "to do", "work items", "roadmap", "schritte", "aufgaben", "etapes", "taches",
                "pasos", "tareas")),
    ("goal", ("goal", "goals", "objective", "intention", "intent", "purpose", "summary",
              "overview", "aim", "ziel", "ziele", "objectif", "but", "objetivo")),
    ("notes", ("notes", "note", "background", "context", "references", "links", "appendix",
               "risks", "open questions", "questions", "hintergrund", "contexte", "remarques")),
]


def _section_kind(heading: str) -> str:
    norm = " ".join(_words(heading.replace("'", " ")))
    norm = re.sub(r"^\d+ ", "", norm)
    for kind, keys in _SECTION_WORDS:
        for key in keys:
            if norm == key or norm.startswith(key + " ") or (len(key) > 6 and key in norm):
                return kind
    return "other"


@dataclass
class _Section:
    kind: str  # preamble | goal | constraints | must_not | non_goals | acceptance | checks |
    #            phases | notes | other | step | phase_heading
    heading: _Block | None
    heading_text: str = ""
    blocks: list[_Block] = field(default_factory=list)


def _sections(blocks: list[_Block]) -> tuple[str, list[_Section]]:
    """Split into sections; returns the document title ('' if none) and the sections."""
    title = ""
    start = 0
    if blocks and blocks[0].kind == "heading" and blocks[0].level == 1 and not blocks[0].step:
        title, start = blocks[0].text, 1
    elif (len(blocks) > 1 and blocks[0].kind == "para" and len(blocks[0].text) <= 120
          and blocks[1].kind != "para" and not blocks[0].text.rstrip().endswith(":")):
        title, start = blocks[0].text, 1  # plain text: a short first line stands for the title
    sections = [_Section("preamble", None)]
    container, container_level = "preamble", 0
    for b in blocks[start:]:
        if b.kind != "heading":
            sections[-1].blocks.append(b)
            continue
        kind = "step" if b.step else _section_kind(b.text)
        if b.level > container_level and container == "phases" and kind in ("other", "step"):
            kind = "phase_heading" if kind == "other" else "step"
        elif b.level > container_level and container not in ("phases", "preamble", "other",
                                                              "step") and kind == "other":
            kind = container  # a sub-heading of a goal/constraints/... section
        else:
            container, container_level = kind, b.level
        sections.append(_Section(kind, b, b.text))
    return title, sections


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


_SEQ_RE = re.compile(r"^(?:first(?:ly)?|then|next|after that|afterwards|finally|lastly|and then|"
                     r"zuerst|dann|danach|anschließend|schließlich|d'abord|ensuite|puis|enfin|"
                     r"primero|luego|después|finalmente)\b[,:]?\s*", re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+(?=[A-ZÄÖÜÉÈ`])", text)
    out = []
    for p in parts:
        p = _SEQ_RE.sub("", p.strip()).strip()
        if p and _has_action(p):
            out.append(p[:1].upper() + p[1:])
    return out


def _has_action(text: str) -> bool:
    return any(w in _ACTION_VERBS for w in _words(text))


# ------------------------------------------------------- commands & paths

_KNOWN_CMDS = frozenset("""pytest python python3 py.test tox nox npm npx yarn pnpm bun node deno
cargo rustc go make cmake ctest ninja mvn gradle ./gradlew ./mvnw gradlew mvnw ruff mypy flake8
black isort pylint bandit eslint prettier tsc jest vitest mocha uv poetry pip pip3 pipenv bash sh
zsh bundle rake rspec dotnet php composer phpunit git docker docker-compose kubectl terraform
helm swift xcodebuild flutter dart mix elixir erl rebar3 stack cabal ghc sbt lein clojure
shellcheck hadolint pre-commit coverage alembic django-admin manage.py bazel buck""".split())
# plain Unix tools: commands when quoted in backticks, never from bare prose ("run test suite")
_UNIX_TOOLS = frozenset("""true false test ls echo cat grep find sed awk diff cmp sort head tail
wc touch mkdir cp mv rm printf env which sleep""".split())
_SHELL_LANGS = frozenset({"", "sh", "bash", "shell", "console", "zsh", "terminal", "shell-session",
                          "cmd", "text"})
_FILE_EXTS = frozenset("""py pyi js mjs cjs ts tsx jsx json toml yaml yml md rst txt cfg ini go rs
java kt kts c h cc cpp hpp cs rb php sh bash sql html css scss sass vue svelte xml gradle proto
lock mod sum tf swift m mm scala clj ex exs erl hs lua r pl dart ipynb csv env conf""".split())
_BARE_FILES = frozenset("Makefile Dockerfile Containerfile Jenkinsfile Procfile Gemfile "
                        "Rakefile Vagrantfile README LICENSE CHANGELOG".split())
_SRC_ROOTS = frozenset("src lib tests test app docs pkg cmd internal scripts bin include "
                       "frontend backend web api server client packages crates".split())
_TICK_RE = re.compile(r"`([^`\n]+)`")
_RUN_CTX_RE = re.compile(r"(?:\b(?:run|rerun|execute|ausführen|ausfuhren|lancer|exécuter|"
                         r"ejecutar|with|mit|avec|via)\s+(?:\w+\s+){0,2})$", re.IGNORECASE)
_BARE_RUN_RE = re.compile(r"\b(?:run|rerun|execute)\s+(?!the\b|all\b|a\b)((?:\./)?[\w.-]+"
                          r"(?:[ \t]+(?!and\b|to\b|then\b|until\b|so\b|again\b)[^\s,;]+)*)",
                          re.IGNORECASE)
_PATH_TOKEN_RE = re.compile(r"(?<![\w/.:@~-])((?:\./)?(?:[\w*.-]+/)+[\w*.-]*|[\w*-][\w*.-]*\.\w{1,6}"
                            r"|(?:Makefile|Dockerfile|README|LICENSE|CHANGELOG)(?:\.\w+)?)(?![\w/])")
_URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+|\bwww\.\S+", re.IGNORECASE)


def _cmd_head(cmd: str) -> str:
    words = [w for w in cmd.split() if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
    return words[0] if words else ""


def _looks_like_command(span: str, *, after_run: bool) -> bool:
    head = _cmd_head(span)
    if head in _KNOWN_CMDS or head.split("/")[-1] in ("gradlew", "mvnw", "manage.py"):
        return True
    if head.startswith(("./", "bin/", "scripts/")) and (" " in span or head.endswith(".sh")):
        return True
    if after_run and head in _UNIX_TOOLS:
        return True
    return after_run and bool(re.match(r"^[\w./-]+$", head)) and " " in span.strip()


def _commands_in_text(text: str) -> list[str]:
    found: list[str] = []
    for m in _TICK_RE.finditer(text):
        span = re.sub(r"^\$\s+", "", m.group(1).strip())
        if _looks_like_command(span, after_run=bool(_RUN_CTX_RE.search(text[:m.start()]))):
            found.append(span)
    plain = _TICK_RE.sub(" ", text)
    for m in _BARE_RUN_RE.finditer(plain):
        cand = m.group(1).rstrip(".:!")
        if _cmd_head(cand) in _KNOWN_CMDS:
            found.append(cand)
    return found


def _commands_in_code(block: _Block) -> list[str]:
    if block.lang not in _SHELL_LANGS:
        return []
    cmds: list[str] = []
    joined = re.sub(r"\\\n\s*", " ", block.text)
    for line in joined.split("\n"):
        s = line.strip()
        prompt = bool(re.match(r"^[$%]\s+", s))
        s = re.sub(r"^[$%]\s+", "", s)
        if not s or s.startswith("#"):
            continue
        if block.lang == "console" and not prompt:
            continue  # command output
        if prompt or block.lang not in ("", "text") or _looks_like_command(s, after_run=False):
            cmds.append(s)
    return cmds


def _paths_in_text(text: str, index: _RepoIndex | None, commands: list[str]) -> list[str]:
    text = _URL_RE.sub(" ", text)
    for c in commands:
        text = text.replace(c, " ")
    found: list[str] = []
    cands = [(m.start(), m.group(1).strip(), True) for m in _TICK_RE.finditer(text)
             if " " not in m.group(1).strip()]
    blanked = _TICK_RE.sub(lambda m: " " * len(m.group(0)), text)  # keeps offsets
    cands += [(m.start(), m.group(1), False) for m in _PATH_TOKEN_RE.finditer(blanked)]
    for _, tok, ticked in sorted(cands):
        tok = tok.rstrip(".,;:)").removeprefix("./")
        if not tok or tok.startswith(("/", "~", "-")) or "//" in tok or re.fullmatch(
                r"[\d.]+|v?\d+(\.\d+)+\w*", tok):
            continue
        first = tok.split("/")[0]
        last = tok.rstrip("/").split("/")[-1]
        ext = last.rsplit(".", 1)[-1] if "." in last.strip(".") else ""
        is_path = (("/" in tok and (tok.endswith("/") or ext in _FILE_EXTS or "*" in tok
                                    or first in _SRC_ROOTS
                                    or (index is not None and index.exists(tok.rstrip("/"))))
                    or (ticked and "/" in tok))
                   or ext in _FILE_EXTS or last.split(".")[0] in _BARE_FILES
                   or (ticked and "*" in tok))
        if ext and ext not in _FILE_EXTS and "/" not in tok:
            is_path = False  # dotted names like "os.path" or "e.g"
        if is_path:
            found.append(tok)
    return found


# ------------------------------------------------------------- repo index

_INDEX_SKIP = frozenset({".git", "node_modules", ".venv", "venv", "__pycache__", ".tox", ".nox",
                         ".mypy_cache", ".pytest_cache", ".ruff_cache", "dist", "build", "target",
                         ".idea", ".vscode", ".eggs", "site-packages"})


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
