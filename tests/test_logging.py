"""Logging: journald priority prefixes, text and JSON lines, secret redaction."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from autopack.daemon._logging import (
    REDACTED,
    RedactingFilter,
    journal_priority,
    parse_level,
    set_log_level,
    setup_logging,
    stderr_is_journal,
)

KEY = "sk-ant-api03-" + "Abc123_-" * 10
LOGGER = logging.getLogger("autopack.test")


@pytest.fixture(autouse=True)
def restore_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        pytest.param(logging.CRITICAL, 2, id="critical-crit"),
        pytest.param(logging.ERROR, 3, id="error-err"),
        pytest.param(logging.WARNING, 4, id="warning-warning"),
        pytest.param(logging.INFO, 6, id="info-info"),
        pytest.param(logging.DEBUG, 7, id="debug-debug"),
        pytest.param(logging.INFO + 5, 6, id="between-info-and-warning"),
        pytest.param(logging.NOTSET, 7, id="notset"),
    ],
)
def test_journal_priority(level: int, priority: int) -> None:
    assert journal_priority(level) == priority


@pytest.mark.parametrize(
    ("text", "level"),
    [
        pytest.param("DEBUG", logging.DEBUG, id="upper"),
        pytest.param("info", logging.INFO, id="lower"),
        pytest.param(" Warning ", logging.WARNING, id="padded"),
    ],
)
def test_parse_level(text: str, level: int) -> None:
    assert parse_level(text) == level


def test_bad_level_and_format_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        setup_logging("LOUD", "text", stream=io.StringIO())
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        setup_logging("INFO", "xml", stream=io.StringIO())  # type: ignore[arg-type]


def test_journal_lines_carry_priority_prefixes() -> None:
    out = io.StringIO()
    setup_logging("DEBUG", "text", journal=True, stream=out)
    LOGGER.debug("d")
    LOGGER.info("run %s started", "r1")
    LOGGER.warning("w")
    LOGGER.error("e")
    LOGGER.critical("c")
    assert out.getvalue().splitlines() == [
        "<7>autopack.test: d",
        "<6>autopack.test: run r1 started",
        "<4>autopack.test: w",
        "<3>autopack.test: e",
        "<2>autopack.test: c",
    ]


def test_every_traceback_line_carries_the_prefix() -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", journal=True, stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        LOGGER.exception("child crashed")
    lines = out.getvalue().splitlines()
    assert lines[0] == "<3>autopack.test: child crashed"
    assert lines[-1] == "<3>RuntimeError: boom"
    assert all(line.startswith("<3>") for line in lines)


def test_plain_text_has_time_level_and_logger() -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", journal=False, stream=out)
    LOGGER.debug("hidden")
    LOGGER.info("shown %d", 42)
    (line,) = out.getvalue().splitlines()
    assert line.endswith(" INFO autopack.test: shown 42")
    assert not line.startswith("<")


def test_json_lines() -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", journal=False, stream=out)
    LOGGER.info("phase %s done", "p1", extra={"run_id": "r1", "attempt": 2, "path": Path("/x")})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        LOGGER.error("failed", exc_info=True)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["level"] == "info"
    assert first["logger"] == "autopack.test"
    assert first["msg"] == "phase p1 done"
    assert (first["run_id"], first["attempt"], first["path"]) == ("r1", 2, "/x")
    assert first["ts"].endswith("+00:00")
    assert "exc" not in first
    assert second["level"] == "error"
    assert second["exc"].endswith("ZeroDivisionError: division by zero")


def test_json_under_journal_is_prefixed() -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", journal=True, stream=out)
    LOGGER.warning("careful")
    line = out.getvalue().rstrip("\n")
    assert line.startswith("<4>{")
    assert json.loads(line[3:])["msg"] == "careful"


def test_setup_twice_replaces_its_own_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", "text", journal=False, stream=first)
    setup_logging("INFO", "text", journal=True, stream=second)
    LOGGER.info("once")
    assert first.getvalue() == ""
    assert second.getvalue() == "<6>autopack.test: once\n"


def test_set_log_level_live() -> None:
    out = io.StringIO()
    setup_logging("WARNING", "text", journal=True, stream=out)
    LOGGER.info("before")
    set_log_level("debug")
    LOGGER.info("after")
    assert out.getvalue() == "<6>autopack.test: after\n"
    with pytest.raises(ValueError, match="unknown log level"):
        set_log_level("chatty")


# --- journal detection, in a real process with a real stderr ------------------

CHILD = textwrap.dedent(
    """
    import logging
    from autopack.daemon._logging import setup_logging
    setup_logging("INFO", "text")
    logging.getLogger("autopack.child").warning("hello")
    """
)


def run_child(tmp_path: Path, journal_stream: str | None) -> str:
    """Run CHILD with stderr going to a file; ``{dev:ino}`` in journal_stream is that file's."""
    err = tmp_path / "stderr"
    with err.open("w") as f:
        st = os.fstat(f.fileno())
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream.format(dev=st.st_dev, ino=st.st_ino)
        subprocess.run([sys.executable, "-c", CHILD], stderr=f, env=env, check=True, timeout=60)
    return err.read_text()


@pytest.mark.parametrize(
    ("journal_stream", "prefixed"),
    [
        pytest.param("{dev}:{ino}", True, id="matching-stderr"),
        pytest.param("{dev}:1", False, id="other-inode"),
        pytest.param("garbage", False, id="garbage"),
        pytest.param(None, False, id="unset"),
    ],
)
def test_journal_detected_from_journal_stream(tmp_path: Path, journal_stream: str | None, prefixed: bool) -> None:
    text = run_child(tmp_path, journal_stream)
    if prefixed:
        assert text == "<4>autopack.child: hello\n"
    else:
        assert text.endswith(" WARNING autopack.child: hello\n")
        assert not text.startswith("<")


def test_stream_without_fileno_is_not_journal() -> None:
    assert not stderr_is_journal({"JOURNAL_STREAM": "1:2"}, io.StringIO())


# --- redaction -----------------------------------------------------------------


def capture_json(**kwargs: object) -> tuple[io.StringIO, RedactingFilter]:
    out = io.StringIO()
    redactor = setup_logging("DEBUG", "json", journal=False, stream=out, **kwargs)  # type: ignore[arg-type]
    return out, redactor


class Holder:
    """An argument whose str() reveals a key, as an SDK object or exception might."""

    def __str__(self) -> str:
        return f"client(api_key={KEY})"


@pytest.mark.parametrize(
    ("msg", "args"),
    [
        pytest.param(f"key is {KEY}", (), id="in-message"),
        pytest.param("key is %s", (KEY,), id="in-str-arg"),
        pytest.param("using %s", (Holder(),), id="in-object-arg"),
        pytest.param("headers %r", ({"x-api-key": KEY},), id="in-dict-arg"),
    ],
)
def test_keys_are_redacted(msg: str, args: tuple[object, ...]) -> None:
    out, _ = capture_json()
    LOGGER.info(msg, *args)
    line = out.getvalue()
    assert KEY not in line
    assert "sk-ant-" not in line
    assert REDACTED in json.loads(line)["msg"]


def test_env_key_value_is_redacted_even_if_not_key_shaped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key-0123456789")
    out, _ = capture_json()
    LOGGER.warning("auth with %s failed", "test-key-0123456789")
    assert json.loads(out.getvalue())["msg"] == f"auth with {REDACTED} failed"


def test_added_secret_is_redacted() -> None:
    out, redactor = capture_json()
    redactor.add_secret("from-credentials-dir-secret\n")
    redactor.add_secret("short")  # too short to redact safely: ignored
    LOGGER.info("key from-credentials-dir-secret loaded; short is fine")
    assert json.loads(out.getvalue())["msg"] == f"key {REDACTED} loaded; short is fine"


def test_traceback_and_extra_fields_are_redacted() -> None:
    out, _ = capture_json()
    try:
        raise PermissionError(f"401 invalid x-api-key {KEY}")
    except PermissionError:
        LOGGER.exception("llm call failed", extra={"request": f"Bearer {KEY}"})
    record = json.loads(out.getvalue())
    assert KEY not in out.getvalue()
    assert record["exc"].endswith(f"PermissionError: 401 invalid x-api-key {REDACTED}")
    assert record["request"] == f"Bearer {REDACTED}"


def test_text_format_is_redacted_too() -> None:
    out = io.StringIO()
    setup_logging("INFO", "text", journal=True, stream=out)
    LOGGER.info("key=%s", KEY)
    assert out.getvalue() == f"<6>autopack.test: key={REDACTED}\n"


def test_clean_records_keep_their_args() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d runs", (3,), None)
    assert RedactingFilter(env={}).filter(record)
    assert (record.msg, record.args) == ("%d runs", (3,))


def test_redact_leaves_ordinary_text() -> None:
    redactor = RedactingFilter(env={})
    assert redactor.redact("sk-ant is a prefix; sk-ant-x too short") == "sk-ant is a prefix; sk-ant-x too short"
    assert redactor.redact(f"a {KEY} b {KEY}") == f"a {REDACTED} b {REDACTED}"
