"""The run list page (``/``) and one row of it (also sent by the live stream)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from ._html import STATES, badge, duration, esc, options, page, shorten, tokens, usd, when
from ._queries import ListFilter
from ._timeline import cost_usd

COLUMNS = ("State", "Run", "Repository / branch", "Goal", "Phase", "Attempts",
           "Tokens in/out/cache", "Avoided", "Cost", "Started", "Duration")
LABELS = dict(zip(COLUMNS, COLUMNS, strict=True)) | {"Tokens in/out/cache": "Tokens i/o/c",
                                                   "Repository / branch": "Repository"}


def is_wedged(row: Mapping[str, Any], now: float, wedged_after_s: float) -> bool:
    """A running run with no event for longer than ``wedged_after_s``."""
    last = row.get("last_event_ts") or row.get("started_at") or row["created_at"]
    return row["state"] == "running" and now - float(last) > wedged_after_s


def cost_cell(row: Mapping[str, Any]) -> str:
    """The run's cost; marked when some calls had no price (counted as $0)."""
    text = usd(cost_usd(row["cost_pusd"]))
    n = row["unpriced_calls"]
    return text if not n else (f'<span title="{n} call{"s" if n != 1 else ""} of a model '
                               f'without a price counted as $0">{text}*</span>')


def run_row(row: Mapping[str, Any], *, now: float, wedged_after_s: float) -> str:
    """One ``<tr>`` of the run list."""
    rid = row["id"]
    wedged = is_wedged(row, now, wedged_after_s)
    t = row["tokens"]
    phase = f'{row["phases_done"]}/{row["phases_total"]}'
    if row["current_phase"]:
        phase += f' <span class="sub">#{row["current_idx"]} {esc(row["current_phase"])}</span>'
    start = row["started_at"]
    dur = ((row["ended_at"] or now) - start) if start else None
    state = badge(row["state"]) + (' <span class="badge wedged" title="no event for longer than '
                                    f'{wedged_after_s:g} s">looks wedged</span>' if wedged else "")
    cells = [
        state,
        f'<a href="/runs/{esc(rid)}" class="mono">{esc(rid)}</a>',
        f'<span title="{esc(row["repo"])}">{esc(os.path.basename(row["repo"]) or row["repo"])}'
        f'</span><br><span class="mono sub branch">{esc(row["branch"])}</span>',
        f'<span title="{esc(row["goal"])}">{esc(shorten(row["goal"], 90))}</span>',
        phase,
        str(row["attempts"]),
        f'{tokens(t["input"])} / {tokens(t["output"])} / '
        f'{tokens(t["cache_creation"] + t["cache_read"])}',
        tokens(row["avoided"]),
        cost_cell(row),
        when(row["created_at"] if not start else start, short=True),
        duration(dur),
    ]
    tds = "".join(f'<td data-label="{esc(LABELS[c])}">{v}</td>'
                  for c, v in zip(COLUMNS, cells, strict=True))
    cls = ' class="wedged"' if wedged else ""
    return (f'<tr id="run-{esc(rid)}" data-seq="{row["seq"]}" data-state="{esc(row["state"])}"'
            f' data-last-event="{row.get("last_event_ts") or row["created_at"]}"{cls}>{tds}</tr>')


def _link(f: ListFilter, **cursor: int | None) -> str:
    q = {"state": f.state, "repo": f.repo, "q": f.text, **cursor}
    return "/?" + urlencode({k: v for k, v in q.items() if v not in (None, "")})


def list_page(data: Mapping[str, Any], f: ListFilter, *, repos: Sequence[str], now: float,
              wedged_after_s: float,
              summary: str, last_event: int) -> bytes:
    rows = "".join(run_row(r, now=now, wedged_after_s=wedged_after_s)
                   for r in data["rows"])
    if not rows:
        rows = f'<tr class="empty"><td colspan="{len(COLUMNS)}">No run matches.</td></tr>'
    head = "".join(f"<th scope=col>{esc(c)}</th>" for c in COLUMNS)
    form = f"""<form class="filters" method="get" action="/" role="search">
<label>State <select name="state">{options(STATES, f.state, "any")}</select></label>
<label>Repository <select name="repo">{options(repos, f.repo, "any")}</select></label>
<label class="grow">Search <input type="search" name="q" value="{esc(f.text or "")}"
 placeholder="goal or run id"></label>
<button type="submit">Filter</button>
{'<a href="/">clear</a>' if (f.state or f.repo or f.text) else ""}
</form>"""
    pager = []
    if data["newer"] is not None:
        pager.append(f'<a rel="prev" href="{esc(_link(f, after=data["newer"]))}">← newer</a>')
        pager.append(f'<a href="{esc(_link(f))}">newest</a>')
    if data["older"] is not None:
        pager.append(f'<a rel="next" href="{esc(_link(f, before=data["older"]))}">older →</a>')
    first_page = f.before is None and f.after is None
    count = f'<p class="count">{data["total"]:,} run{"s" if data["total"] != 1 else ""}' + (
        " match" if (f.state or f.repo or f.text) else "") + "</p>"
    body = f"""{summary}
<h1>Runs</h1>
{form}
{count}
<div class="table-wrap runs-wrap"><table class="runs" id="runs"><thead><tr>{head}</tr></thead>
<tbody>{rows}</tbody></table></div>
<nav class="pager">{" ".join(pager)}</nav>"""
    stream = "/events?" + urlencode({k: v for k, v in (
        ("state", f.state), ("repo", f.repo), ("q", f.text)) if v})
    return page("Runs", body, active="runs", data={
        "page": "list", "stream": stream, "since": last_event,
        "first-page": "1" if first_page else "0", "page-size": f.limit,
        "wedged-after": f"{wedged_after_s:g}"})
