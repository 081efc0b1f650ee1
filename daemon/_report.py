"""Run reports: the same facts as JSON (keys per DESIGN.md) and as Markdown.

Built from the run row, the event log and the LLM call table only: the event
log is the source of truth.
"""

from __future__ import annotations

import time
from typing import Any


def build_report(run: dict[str, Any], events: list[dict[str, Any]], tokens: dict[str, int],
                 commits: list[dict[str, str]]) -> dict[str, Any]:
    """The JSON report: the status fields plus tokens, per-phase checks and failures."""
    phases: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    for p in run["phases"]:
        entry = {
            "id": p["id"], "state": p["state"], "attempts": p["attempts"], "kind": p["kind"],
            "reason": p["reason"], "commit": p["commit_sha"], "doctor_calls": p["doctor_calls"],
            "duration_s": _dur(p["started_at"], p["ended_at"]),
            "checks": [], "failures": [], "mitigations": [],
        }
        phases.append(entry)
        by_id[p["id"]] = entry
    tokens_avoided = 0
    for ev in events:
        found = by_id.get(ev["phase_id"] or "")
        pl = ev["payload"]
        if ev["kind"] == "check_finished" and found is not None:
            found["checks"].append({
                "attempt": ev["attempt"], "command": pl.get("command"),
                "exit_code": pl.get("exit_code"), "duration_s": pl.get("duration_s"),
                "timed_out": pl.get("timed_out", False),
            })
        elif ev["kind"] == "classified" and found is not None:
            tokens_avoided += int(pl.get("tokens_avoided", 0) or 0)
            found["failures"].append({
                "attempt": ev["attempt"], "pattern": pl.get("pattern"),
                "evidence": pl.get("evidence", []), "command": pl.get("command"),
            })
        elif ev["kind"] == "mitigation" and found is not None:
            found["mitigations"].append({"attempt": ev["attempt"], **pl})
    return {
        "run_id": run["id"],
        "state": run["state"],
        "reason": run["reason"],
        "goal": run["goal"],
        "repo": run["repo"],
        "base": run["base"],
        "base_commit": run["base_commit"],
        "branch": run["branch"],
        "final_commit": run["final_commit"],
        "arm": run["arm"],
        "created_at": run["created_at"],
        "started_at": run["started_at"],
        "ended_at": run["ended_at"],
        "duration_s": _dur(run["started_at"], run["ended_at"]),
        "phases": phases,
        "commits": commits,
        "tokens": tokens,
        "tokens_avoided": tokens_avoided,
        "totals": {
            "phases": len(phases),
            "succeeded": sum(1 for p in phases if p["state"] == "succeeded"),
            "attempts": sum(p["attempts"] for p in phases),
            "checks": sum(len(p["checks"]) for p in phases),
            "failures": sum(len(p["failures"]) for p in phases),
            "doctor_calls": sum(p["doctor_calls"] for p in phases),
            "events": len(events),
        },
    }


def _dur(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start and end else None


def _ts(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value)) if value else "—"


def render_markdown(rep: dict[str, Any]) -> str:
    """A person's view of the same report."""
    out = [f"# autopack run {rep['run_id']}: {rep['state']}", ""]
    out.append(f"- **Goal:** {rep['goal']}")
    if rep["reason"]:
        out.append(f"- **Reason:** {rep['reason']}")
    out.append(f"- **Repository:** `{rep['repo']}` from `{rep['base']}` ({(rep['base_commit'] or '')[:12]})")
    out.append(f"- **Branch:** `{rep['branch']}`" + (f" at {rep['final_commit'][:12]}" if rep["final_commit"] else ""))
    out.append(f"- **Started:** {_ts(rep['started_at'])}; **ended:** {_ts(rep['ended_at'])}"
               + (f" ({rep['duration_s']:.1f} s)" if rep["duration_s"] else ""))
    t = rep["tokens"]
    out.append(f"- **Tokens:** input {t['input']}, output {t['output']}, cache write "
               f"{t['cache_creation']}, cache read {t['cache_read']}; avoided ≈ {rep['tokens_avoided']}")
    out.append(f"- **Arm:** {rep['arm']}")
    out += ["", "## Phases", "", "| phase | state | attempts | checks | failures | commit |",
            "|---|---|---|---|---|---|"]
    for p in rep["phases"]:
        out.append(f"| {p['id']} | {p['state']} | {p['attempts']} | {len(p['checks'])} | "
                   f"{len(p['failures'])} | {(p['commit'] or '')[:12]} |")
    for p in rep["phases"]:
        if not (p["checks"] or p["failures"] or p["reason"]):
            continue
        out += ["", f"### {p['id']} ({p['state']})", ""]
        if p["reason"]:
            out.append(f"Reason: {p['reason']}")
            out.append("")
        for c in p["checks"]:
            mark = "✔" if c["exit_code"] == 0 else "✘"
            out.append(f"- {mark} attempt {c['attempt']}: `{c['command']}` → exit {c['exit_code']}"
                       f" in {c['duration_s']:.2f} s" + (" (timed out)" if c["timed_out"] else ""))
        for f in p["failures"]:
            ev = "; ".join(f["evidence"])[:200]
            out.append(f"- failure (attempt {f['attempt']}): **{f['pattern'] or 'unclassified'}** {ev}")
        for m in p["mitigations"]:
            out.append(f"- mitigation (attempt {m['attempt']}): {m.get('summary', m)}")
    if rep["commits"]:
        out += ["", "## Commits", ""]
        out += [f"- `{c['sha'][:12]}` {c['subject']}" for c in rep["commits"]]
    tot = rep["totals"]
    out += ["", "## Totals", "",
            f"{tot['succeeded']}/{tot['phases']} phases succeeded; {tot['attempts']} attempts; "
            f"{tot['checks']} checks; {tot['failures']} failures; {tot['doctor_calls']} Doctor calls."]
    return "\n".join(out) + "\n"
