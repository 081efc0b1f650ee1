"""HTML building blocks: escaping, number/time formats, the page layout.

Pure functions returning ``str``. Everything that comes from a run (goal, paths,
command output, model text) goes through :func:`esc`; no inline script or style
is ever emitted (the Content-Security-Policy forbids both).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterable, Mapping

STATES = ("queued", "running", "interrupted", "succeeded", "failed", "cancelled")


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def attrs(values: Mapping[str, object]) -> str:
    return "".join(f' {k}="{esc(v)}"' for k, v in values.items() if v is not None)


def tokens(n: int | None) -> str:
    """``950``, ``12.3k``, ``4.51M``."""
    if n is None:
        return "—"
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:.2f}" if value >= 0.1 or value == 0 else f"${value:.4f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def when(ts: float | None, *, short: bool = False) -> str:
    """A ``<time>`` element in UTC (machine-readable ``datetime``); ``short`` drops the year
    and shows the full time as a tooltip."""
    if not ts:
        return "—"
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    full = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    if short:
        return f'<time datetime="{iso}" title="{full}">{time.strftime("%m-%d %H:%M:%S", time.gmtime(ts))}</time>'
    return f'<time datetime="{iso}">{full[:-4]}</time>'


def shorten(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"


def badge(state: str, extra: str = "") -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "_", str(state).lower())
    return f'<span class="badge s-{slug}{(" " + extra) if extra else ""}">{esc(state)}</span>'


def page(title: str, body: str, *, active: str, data: Mapping[str, object] | None = None) -> bytes:
    """The whole document: header with navigation, ``body`` in ``<main>``, the script."""
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if key == active else ""}>{label}</a>'
        for key, href, label in (("runs", "/", "Runs"), ("overview", "/overview", "Overview")))
    doc = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{esc(title)} · autopack</title>
<link rel="stylesheet" href="/static/dashboard.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<script src="/static/dashboard.js" defer></script>
</head>
<body{attrs({f"data-{k}": v for k, v in (data or {}).items()})}>
<header class="top"><a class="brand" href="/">autopack</a><nav>{nav}</nav>
<span id="live" class="live" hidden>live</span></header>
<main>
{body}
</main>
</body>
</html>
"""
    return doc.encode("utf-8")


def options(values: Iterable[str], selected: str | None, empty: str) -> str:
    out = [f'<option value="">{esc(empty)}</option>']
    for v in values:
        sel = " selected" if v == selected else ""
        out.append(f'<option value="{esc(v)}"{sel}>{esc(v)}</option>')
    return "".join(out)


def message_page(title: str, text: str) -> bytes:
    """A page that only says something (not found, refused)."""
    return page(title, f'<h1>{esc(title)}</h1><p>{esc(text)}</p><p><a href="/">All runs</a></p>',
                active="")


def login_page(error: str | None = None) -> bytes:
    err = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    body = f"""<h1>Sign in</h1>
<p>This dashboard needs its token (the file named by <code>dashboard_token_file</code>, or the
<code>dashboard_token</code> credential).</p>{err}
<form class="login" method="post" action="/login">
<label>Token <input type="password" name="token" autocomplete="current-password" required
 autofocus></label>
<button type="submit">Sign in</button>
</form>"""
    return page("Sign in", body, active="")
