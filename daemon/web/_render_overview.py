"""The overview page (``/overview``) and the one-line summary above the run list."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._html import badge, esc, page, tokens, usd


def summary_line(ov: Mapping[str, Any]) -> str:
    """Counts by state (each a filter link), running against the limit, degraded parts."""
    counts = ov["counts"]
    chips = " ".join(f'<a class="chip" href="/?state={esc(s)}">{badge(s)} {n:,}</a>'
                     for s, n in sorted(counts.items()))
    degraded = ov["degraded"]
    health = (f'<span class="badge s-failed">degraded: {esc(", ".join(degraded))}</span>'
              if degraded else '<span class="badge s-succeeded">healthy</span>')
    return (f'<section class="summary" id="summary"><span>{ov["running"]}/{ov["limit"]} running'
            f' · {counts.get("queued", 0):,} queued</span> {chips} '
            f'<a href="/overview">{health}</a></section>')


def _budget(used: float | None, limit: float | None, fmt: Any) -> str:
    if limit is None:
        return f"{fmt(used)} <span class=sub>(no daily budget)</span>"
    pct = 0 if not limit or used is None else min(used / limit * 100, 100)
    return (f'{fmt(used)} of {fmt(limit)} <meter min="0" max="100" value="{pct:.0f}" '
            f'high="80" optimum="0">{pct:.0f}%</meter>')


def overview_page(ov: Mapping[str, Any]) -> bytes:
    parts = "".join(
        f'<tr><td>{esc(name)}</td><td>{badge(p["state"])}</td><td>{p["restarts"]}</td>'
        f'<td class="mono">{esc(p["last_error"] or "")}</td></tr>'
        for name, p in ov["parts"].items())
    llm = ov["llm"]
    llm_rows = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in (
        ("Circuit breaker", badge(llm["breaker_state"])),
        ("Breaker opened", f'{llm["breaker_opens"]} times'),
        ("Consecutive failures", llm["consecutive_failures"]),
        ("Backoff left", f'{llm["backoff_remaining_s"]:.1f} s'),
        ("Calls in flight / waiting", f'{llm["in_flight"]} / {llm["waiting"]} '
                                      f'(limit {ov["llm_limit"]})'),
        ("Requests / rate-limited", f'{llm["requests"]:,} / {llm["rate_limited"]:,}'),
    )) if llm else "<dt>LLM</dt><dd>not configured</dd>"
    day = ov["today"]
    arms = "".join(
        f'<tr><td>{esc(arm)}</td><td>{a["runs"]:,}</td><td>{a["ended"]:,}</td>'
        f'<td>{a["succeeded"]:,}</td><td>{_pct(a["success_rate"])}</td>'
        f'<td>{tokens(a["tokens_spent"])}</td><td>{tokens(a["tokens_avoided"])}</td></tr>'
        for arm, a in ov["arms"].items())
    body = f"""<h1>Overview</h1>
<div class="grid">
<section class="card"><h2>Supervised parts</h2><div class="table-wrap"><table>
<thead><tr><th>Part</th><th>State</th><th>Restarts</th><th>Last error</th></tr></thead>
<tbody>{parts}</tbody></table></div></section>
<section class="card"><h2>Queue</h2><dl class="facts">
<dt>Running</dt><dd>{ov["running"]} of {ov["limit"]} (max_concurrent_runs)</dd>
<dt>Queued</dt><dd>{ov["counts"].get("queued", 0):,}</dd>
<dt>Interrupted</dt><dd>{ov["counts"].get("interrupted", 0):,}</dd>
<dt>All runs</dt><dd>{sum(ov["counts"].values()):,}</dd></dl></section>
<section class="card"><h2>Rate limiter and circuit breaker</h2><dl class="facts">{llm_rows}</dl>
</section>
<section class="card"><h2>Today (UTC)</h2><dl class="facts">
<dt>Tokens</dt><dd>{_budget(day["tokens"], day["token_budget"], tokens)}</dd>
<dt>Cost</dt><dd>{_budget(day["usd"], day["usd_budget"], usd)}</dd>
<dt>LLM calls</dt><dd>{day["calls"]:,}</dd></dl></section>
<section class="card wide"><h2>Success by A/B arm</h2><div class="table-wrap"><table>
<thead><tr><th>Arm</th><th>Runs</th><th>Ended</th><th>Succeeded</th><th>Success rate</th>
<th>Tokens spent</th><th>Tokens avoided</th></tr></thead><tbody>{arms}</tbody></table></div>
</section>
</div>"""
    return page("Overview", body, active="overview", data={"page": "overview"})


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.0f}%"
