"""Reading a plan's text: words, Markdown blocks, sections, commands and paths.

The text half of plan normalization (:mod:`._normalize` decides phases, scope,
checks and confidence from what this module finds). Pure and deterministic:
no I/O at all, and no judgement beyond "what does this text say".

- Words: :func:`_words` (ASCII-folded, lower-case), stop words and the verb
  sets that tell an edit from a run, :func:`_has_action`, :func:`_slug`.
- Lexing: :func:`_lex` turns Markdown or plain text into :class:`_Block` s —
  headings (ATX, setext, and plain ``Label:`` lines), list items (bullets,
  numbers, checkboxes, with their indentation), fenced code, paragraphs,
  ``Goal: …`` style fields and ``Phase N:`` / ``Step N:`` markers;
  :func:`_sentences` splits a paragraph into actionable sentences.
- Sections: :func:`_sections` classifies headings by their words (goal,
  constraints, non-goals, acceptance, checks, phases, notes, other) and
  groups the blocks under them.
- Commands and paths: :func:`_commands_in_text` / :func:`_commands_in_code`
  find the commands a plan names (known tools, ``run …``, shell code
  blocks); :func:`_paths_in_text` finds the file and directory paths.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Protocol

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


def _has_action(text: str) -> bool:
    return any(w in _ACTION_VERBS for w in _words(text))


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


class _PathLookup(Protocol):
    """What :func:`_paths_in_text` asks of the repository index."""

    def exists(self, rel: str) -> bool: ...


def _paths_in_text(text: str, index: _PathLookup | None, commands: list[str]) -> list[str]:
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
