"""The run detail page (``/runs/<id>``): summary, Gantt-like timeline, attempts explained."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._html import badge, duration, esc, page, tokens, usd, when
from ._render_list import cost_cell, is_wedged
from ._timeline import Attempt, Failure, Timeline, build_timeline, call_tokens, cost_usd

MAX_DIFF_LINES = 2000


def detail_body(run: Mapping[str, Any], *, now: float, wedged_after_s: float) -> str:
    """Everything below the page header; the live stream re-sends this on each change."""
    tl = build_timeline(run, now)
    return "".join((_summary(run, now, wedged_after_s), _phases(run),
                    _gantt(run, tl, now), _attempts(run, tl), _event_log(run)))


def detail_page(run: Mapping[str, Any], *, now: float, wedged_after_s: float,
                last_event: int) -> bytes:
    rid = run["id"]
    body = (f'<h1>Run <span class="mono">{esc(rid)}</span> {badge(run["state"])}</h1>'
            f'<div id="run-body">{detail_body(run, now=now, wedged_after_s=wedged_after_s)}</div>')
    ended = run["state"] in ("succeeded", "failed", "cancelled")
    return page(f"Run {rid}", body, active="runs", data={
        "page": "detail", "stream": f"/runs/{rid}/events", "since": last_event,
        "ended": "1" if ended else "0"})


def _summary(run: Mapping[str, Any], now: float, wedged_after_s: float) -> str:
    t = run["tokens"]
    start = run["started_at"]
    dur = ((run["ended_at"] or now) - start) if start else None
    wedged = is_wedged(run, now, wedged_after_s)
    facts = [
        ("State", badge(run["state"]) + (' <span class="badge wedged">looks wedged</span>'
                                         if wedged else "")),
        ("Goal", esc(run["goal"])),
        ("Reason", esc(run["reason"]) if run["reason"] else None),
        ("Repository", f'<span class="mono">{esc(run["repo"])}</span>'),
        ("Branch", f'<span class="mono">{esc(run["branch"])}</span>'
         + (f' at <span class="mono">{esc((run["final_commit"] or "")[:12])}</span>'
            if run["final_commit"] else "")),
        ("Base", f'<span class="mono">{esc(run["base"])}</span> '
         f'<span class="mono sub">{esc((run["base_commit"] or "")[:12])}</span>'),
        ("Arm", esc(run["arm"])),
        ("Submitted", when(run["created_at"])),
        ("Started", when(start)),
        ("Ended", when(run["ended_at"])),
        ("Duration", duration(dur)),
        ("Phases", f'{run["phases_done"]}/{run["phases_total"]} done, {run["attempts"]} attempts'),
        ("Tokens", f'input {tokens(t["input"])}, output {tokens(t["output"])}, cache write '
                   f'{tokens(t["cache_creation"])}, cache read {tokens(t["cache_read"])}'),
        ("Tokens avoided", tokens(run["avoided"])),
        ("Cost", cost_cell(run)),
        ("Last event", when(run["last_event_ts"])),
        ("Report", f'<a href="/runs/{esc(run["id"])}/report.md">Markdown</a> · '
                   f'<a href="/runs/{esc(run["id"])}/report.json">JSON</a>'),
    ]
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts if v is not None)
    return f'<section class="card"><dl class="facts">{items}</dl></section>'


def _phases(run: Mapping[str, Any]) -> str:
    rows = []
    for p in run["phases"]:
        dur = (p["ended_at"] - p["started_at"]) if p["started_at"] and p["ended_at"] else None
        rows.append(
            f'<tr><td>{p["idx"] + 1}</td><td><a href="#phase-{esc(p["id"])}">{esc(p["id"])}</a>'
            f'</td><td>{esc(p["kind"])}</td><td>{badge(p["state"])}</td><td>{p["attempts"]}</td>'
            f'<td>{p["doctor_calls"]}</td><td>{duration(dur)}</td>'
            f'<td class="mono">{esc((p["commit_sha"] or "")[:12])}</td>'
            f'<td>{esc(p["reason"] or "")}</td></tr>')
    return ('<section><h2>Phases</h2><div class="table-wrap"><table class="phases"><thead><tr>'
            "<th>#</th><th>Phase</th><th>Kind</th><th>State</th><th>Attempts</th>"
            "<th>Doctor calls</th><th>Duration</th><th>Commit</th><th>Reason</th></tr></thead>"
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def _gantt(run: Mapping[str, Any], tl: Timeline, now: float) -> str:
    """One track per phase, one bar per attempt (SVG: no inline styles under the CSP)."""
    if not tl.attempts:
        return '<section><h2>Timeline</h2><p class="sub">No attempt yet.</p></section>'
    tracks = []
    for p in run["phases"]:
        bars = []
        for a in tl.by_phase.get(p["id"], []):
            left, width = tl.position(a, now)
            end = a.end if a.end is not None else now
            label = (f"{p['id']} attempt {a.n}: {a.outcome}, {duration(end - a.start)}")
            bars.append(
                f'<a href="#a-{esc(p["id"])}-{a.n}"><rect class="bar o-{esc(a.outcome)}" '
                f'x="{left}%" y="3" width="{width}%" height="16" rx="3">'
                f"<title>{esc(label)}</title></rect></a>")
        tracks.append(f'<div class="track"><span class="track-label">{esc(p["id"])}</span>'
                      f'<svg class="gantt" role="img" aria-label="attempts of {esc(p["id"])}" '
                      f'height="22" width="100%">{"".join(bars)}</svg></div>')
    span = duration(tl.end - tl.start)
    return (f'<section><h2>Timeline</h2><div class="timeline">{"".join(tracks)}</div>'
            f'<p class="sub axis"><span>{when(tl.start)}</span><span>{span}</span>'
            f'<span>{when(run["ended_at"]) if run["ended_at"] else "now"}</span></p>'
            '<p class="legend"><span class="key o-succeeded">passed</span>'
            '<span class="key o-failed">failed</span><span class="key o-running">running</span>'
            "</p></section>")


def _attempts(run: Mapping[str, Any], tl: Timeline) -> str:
    out = ["<section><h2>Attempts</h2>"]
    for p in run["phases"]:
        attempts = tl.by_phase.get(p["id"], [])
        out.append(f'<h3 id="phase-{esc(p["id"])}">{esc(p["id"])} {badge(p["state"])}</h3>')
        if not attempts:
            out.append('<p class="sub">Not started.</p>')
        out += [_attempt(a) for a in attempts]
    out.append("</section>")
    return "".join(out)


def _attempt(a: Attempt) -> str:
    dur = duration((a.end - a.start) if a.end else None)
    parts = [f'<article class="attempt o-{esc(a.outcome)}" id="a-{esc(a.phase_id)}-{a.n}">'
             f"<h4>Attempt {a.n} {badge(a.outcome)} <span class=sub>{when(a.start)} · {dur}"
             "</span></h4>"]
    if a.context_bytes:
        parts.append('<p class="ctx">Context slice: ' + ", ".join(
            f"{esc(role)} {n:,} bytes" for role, n in a.context_bytes.items()) + "</p>")
    if a.builder:
        b = a.builder
        parts.append(
            f'<p class="builder"><b>Builder</b>: {esc(b.get("turns", "…"))} turns, '
            f'{esc(b.get("tool_calls", "…"))} tool calls, {tokens(b.get("tokens"))} tokens'
            + (f', stopped: {esc(b["stop_reason"])}' if b.get("stop_reason") else "")
            + (f', error: {esc(b["error"])}' if b.get("error") else "") + "</p>")
        if b.get("summary"):
            parts.append(f'<blockquote>{esc(b["summary"])}</blockquote>')
    if a.diff:
        parts.append(_diff(a))
    if a.drift:
        parts.append(f'<p class="drift"><b>Drift</b> ({esc(a.drift.get("action"))}): '
                     + ", ".join(f'<span class="mono">{esc(f)}</span>'
                                 for f in a.drift.get("files", [])) + "</p>")
    for i, c in enumerate(a.checks):
        ok = c.get("exit_code") == 0
        excerpt = c.get("excerpt") or ""
        parts.append(
            f'<details class="check {"ok" if ok else "bad"}" data-key="c-{esc(a.phase_id)}-{a.n}-{i}">'
            f'<summary>{"✔" if ok else "✘"} <span class="mono">{esc(c.get("command"))}</span> → '
            f'exit {esc(c.get("exit_code"))} in {duration(c.get("duration_s"))}'
            + (" (timed out)" if c.get("timed_out") else "")
            + f' <span class="sub">{esc(c.get("output_bytes", 0))} bytes of output</span></summary>'
            f'<pre class="tail">{esc(excerpt) or "(no output)"}</pre></details>')
    parts += [_failure(f) for f in a.failures]
    for av in a.avoided:
        parts.append(f'<p class="avoided">A Doctor call was not needed: '
                     f'<span class="pattern mono">{esc(av.get("pattern"))}</span> handled it, '
                     f'≈ {tokens(av.get("tokens_avoided"))} tokens saved</p>')
    if a.calls:
        parts.append(_calls(a))
    parts.append("</article>")
    return "".join(parts)


def _diff(a: Attempt) -> str:
    d = a.diff or {}
    lines = str(d.get("diff", "")).splitlines()
    shown = []
    for ln in lines[:MAX_DIFF_LINES]:
        cls = ("add" if ln.startswith("+") and not ln.startswith("+++") else
               "del" if ln.startswith("-") and not ln.startswith("---") else
               "hunk" if ln.startswith("@@") else "meta" if ln.startswith(("diff ", "index "))
               else "")
        shown.append(f'<span class="{cls}">{esc(ln)}</span>' if cls else esc(ln))
    note = " (truncated)" if d.get("truncated") or len(lines) > MAX_DIFF_LINES else ""
    files = d.get("files") or []
    return (f'<details class="diff" data-key="d-{esc(a.phase_id)}-{a.n}" open><summary>'
            f'<b>Builder edits</b>: {len(files)} file{"s" if len(files) != 1 else ""}, '
            f'+{esc(d.get("added", 0))} −{esc(d.get("removed", 0))}{note}</summary>'
            f'<pre class="diff">{chr(10).join(shown)}</pre></details>')


def _failure(f: Failure) -> str:
    pattern = (f'<span class="pattern mono">{esc(f.pattern)}</span>' if f.pattern
               else '<span class="pattern none">unclassified</span>')
    out = [f'<div class="failure"><p><b>Failure</b> of <span class="mono">{esc(f.command)}</span>'
           f" (exit {esc(f.exit_code)}): {pattern}</p>"]
    if f.evidence:
        out.append('<pre class="evidence">' + "\n".join(esc(e) for e in f.evidence) + "</pre>")
    if f.decision:
        out.append(f'<p>Decision: <b>{esc(f.decision)}</b>'
                   + (f" — {esc(f.reason)}" if f.reason else "") + "</p>")
    if f.hint:
        out.append(f'<p>Hint for the Builder: <q>{esc(f.hint)}</q></p>')
    for m in f.mitigations:
        ok = "done" if m.get("ok") and m.get("acted") else "not applied" if not m.get("acted") \
            else "failed"
        out.append(f'<p class="mitigation">Mitigation <b>{esc(m.get("action"))}</b> ({ok}): '
                   f'{esc(m.get("summary"))}</p>')
    for d in f.doctor:
        if d["kind"] == "doctor_fix":
            out.append(f'<p class="doctor">Doctor fix ran <span class="mono">'
                       f'{esc(d.get("command"))}</span> → exit {esc(d.get("exit_code"))}</p>')
            continue
        out.append(f'<p class="doctor">Doctor decided <b>{esc(d.get("decision"))}</b>'
                   + (f": {esc(d.get('rationale'))}" if d.get("rationale") else "")
                   + (f" ({esc(d.get('error'))})" if d.get("error") else "")
                   + (f' <span class="sub">{tokens(d.get("tokens"))} tokens</span>'
                      if d.get("tokens") else "") + "</p>")
        if d.get("hint"):
            out.append(f'<p>Doctor\'s hint: <q>{esc(d["hint"])}</q></p>')
    out.append("</div>")
    return "".join(out)


def _calls(a: Attempt) -> str:
    rows = []
    for c in a.calls:
        t = call_tokens(c)
        cost = cost_usd(c.get("cost_pusd"))
        rows.append(f'<tr><td>{esc(c["role"])}</td><td class="mono">{esc(c["model"])}</td>'
                    f'<td>{t["input"]:,}</td><td>{t["output"]:,}</td><td>{t["cache_creation"]:,}'
                    f'</td><td>{t["cache_read"]:,}</td><td>{usd(cost)}</td></tr>')
    return (f'<details class="calls" data-key="l-{esc(a.phase_id)}-{a.n}"><summary>{len(a.calls)}'
            f' LLM call{"s" if len(a.calls) != 1 else ""}</summary><div class="table-wrap">'
            '<table><thead><tr><th>Role</th><th>Model</th><th>Input</th><th>Output</th>'
            "<th>Cache write</th><th>Cache read</th><th>Cost</th></tr></thead>"
            f'<tbody>{"".join(rows)}</tbody></table></div></details>')


def _event_log(run: Mapping[str, Any]) -> str:
    events = run["events"][-300:]
    rows = "".join(
        f'<tr><td class="mono">{ev["id"]}</td><td>{when(ev["ts"])}</td>'
        f'<td>{esc(ev["phase_id"] or "")}</td><td>{esc(ev["attempt"] or "")}</td>'
        f'<td>{esc(ev["kind"])}</td><td class="mono payload">'
        f'{esc(json.dumps(ev["payload"], ensure_ascii=False)[:300])}</td></tr>' for ev in events)
    shown = f"last {len(events)} of {run['events_total']}" if run["events_total"] > len(events) \
        else f"{len(events)}"
    return (f'<section><details class="log" data-key="log"><summary>Event log ({shown} events)'
            '</summary><div class="table-wrap"><table><thead><tr><th>id</th><th>time</th>'
            "<th>phase</th><th>attempt</th><th>kind</th><th>payload</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div></details></section>")
