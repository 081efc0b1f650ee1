"""Logging set-up for autopackd: journald priorities under systemd, text or JSON lines otherwise.

Theory of operation
-------------------
One handler on the root logger writes to stderr. Under systemd, stderr is a
stream to journald (``JOURNAL_STREAM=<dev>:<inode>`` names it); journald reads
a ``<N>`` prefix on each line as the syslog priority (sd-daemon.h's
``SD_ERR`` = ``<3>`` ...), so ``journalctl -p warning -u autopackd`` works.
journald stamps the time itself, so the prefixed format leaves it out.
Otherwise lines are plain text with a timestamp, or JSON objects, one per
line (``ts``, ``level``, ``logger``, ``msg``, any ``extra=`` fields, and
``exc`` with the traceback).

A :class:`RedactingFilter` on that handler replaces anything that looks like
an Anthropic API key, and the exact value of ``ANTHROPIC_API_KEY`` or of any
secret registered with :meth:`RedactingFilter.add_secret`, with
``[redacted]`` — in the message, its arguments, ``extra=`` fields and
tracebacks — before any formatter sees the record.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO

REDACTED = "[redacted]"

# Anthropic keys look like sk-ant-api03-<base64url...>; admin keys sk-ant-admin01-...
_KEY_RE = re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}")

# Shortest env/registered secret we redact verbatim: redacting "x" would shred every line.
_MIN_SECRET_LEN = 8

# sd-daemon.h: SD_EMERG 0 ... SD_CRIT 2, SD_ERR 3, SD_WARNING 4, SD_NOTICE 5, SD_INFO 6, SD_DEBUG 7.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
           "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL}

# Attributes every LogRecord has; anything else came in through extra=.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

_HANDLER_MARK = "_autopack_handler"

LogFormat = Literal["text", "json"]


def journal_priority(levelno: int) -> int:
    """The syslog priority (0-7) journald should record for a Python log level."""
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return 7


def stderr_is_journal(env: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """True if ``JOURNAL_STREAM`` names the device and inode of ``stream`` (default stderr).

    systemd sets the variable for services whose output goes to the journal;
    comparing dev:inode (as sd-journal's docs ask) keeps a child process whose
    stderr was redirected elsewhere from emitting ``<N>`` prefixes into a file.
    """
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        # ValueError: not a number, or io.UnsupportedOperation (a StringIO has no fileno).
        return False


def parse_level(level: str) -> int:
    """``"DEBUG"`` ... ``"CRITICAL"`` (any case) → the logging level; raises ValueError otherwise."""
    try:
        return _LEVELS[level.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}") from None


class RedactingFilter(logging.Filter):
    """Replaces API keys and registered secrets with ``[redacted]`` in every record it passes.

    Always returns True (it never drops a record). It mutates the record, so
    every handler after it sees the redacted text too.
    """

    def __init__(self, secrets: Iterable[str] = (), *, env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        env = os.environ if env is None else env
        for secret in (*secrets, env.get("ANTHROPIC_API_KEY", "")):
            self.add_secret(secret)

    def add_secret(self, secret: str) -> None:
        """Also redact this exact value (e.g. the key read from ``$CREDENTIALS_DIRECTORY``)."""
        secret = secret.strip()
        if len(secret) >= _MIN_SECRET_LEN:
            self._secrets.add(secret)

    def redact(self, text: str) -> str:
        """``text`` with every key-like substring and registered secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _KEY_RE.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as logging does
            message = None
        if message is not None:
            redacted = self.redact(message)
            if redacted != message:
                # Freeze the formatted message: args can hold the secret inside any object.
                record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


class JournalFormatter(logging.Formatter):
    """Prefixes every line of another formatter's output with ``<priority>``.

    Each line of a multi-line record (a traceback) becomes its own journal
    entry, so each carries the priority, not only the first.
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self._inner.format(record).split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``,
    ``extra=`` fields, and ``exc`` / ``stack`` when present. Non-JSON values are ``str()``-ed."""

    def format(self, record: logging.LogRecord) -> str:
        ts = _dt.datetime.fromtimestamp(record.created, _dt.UTC)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


def _text_formatter(journal: bool) -> logging.Formatter:
    if journal:
        return logging.Formatter("%(name)s: %(message)s")
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(
    level: str,
    fmt: LogFormat = "text",
    *,
    journal: bool | None = None,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> RedactingFilter:
    """Install autopackd's handler on the root logger and return its redacting filter.

    ``level``: DEBUG, INFO, WARNING, ERROR or CRITICAL. ``fmt``: ``"text"`` or
    ``"json"``. ``journal``: add ``<N>`` priority prefixes; None detects it
    from ``JOURNAL_STREAM`` (see :func:`stderr_is_journal`). ``stream``
    defaults to stderr. ``secrets``: values to redact besides key-like strings
    and ``$ANTHROPIC_API_KEY``; add more later with the returned filter's
    ``add_secret``. Calling it again replaces the handler it installed before
    (other handlers, e.g. pytest's, are left alone). Raises ValueError for an
    unknown level or format.
    """
    levelno = parse_level(level)
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}; expected 'text' or 'json'")
    stream = sys.stderr if stream is None else stream
    if journal is None:
        journal = stderr_is_journal(stream=stream)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else _text_formatter(journal)
    if journal:
        formatter = JournalFormatter(formatter)
    redactor = RedactingFilter(secrets)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(redactor)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    return redactor


def set_log_level(level: str) -> None:
    """Change the root level live (``log_level`` is reloadable on SIGHUP); ValueError if unknown."""
    logging.getLogger().setLevel(parse_level(level))
