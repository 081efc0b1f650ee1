"""Run reports: the same facts as JSON (keys per DESIGN.md) and as Markdown.

Built from the run row, the event log and the LLM call table only: the event
log is the source of truth.
"""

from __future__ import annotations

import json
import time
from typing import Any

PUSD_PER_USD = 10**12  # costs are stored in picodollars (see autopack.actors._budget)


def build_report(run: dict[str, Any], events: list[dict[str, Any]], tokens: dict[str, int],
                 commits: list[dict[str, str]],
                 calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON report: the status fields plus tokens, cost, per-phase checks and failures.

    ``calls`` are the run's LLM calls (``run_llm_calls`` rows): each appears under
    its phase with its tokens and cost in USD; ``cost`` sums them (by role too).
    """
    phases: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    for p in run["phases"]:
        entry = {
            "id": p["id"], "state": p["state"], "attempts": p["attempts"], "kind": p["kind"],
            "reason": p["reason"], "commit": p["commit_sha"], "doctor_calls": p["doctor_calls"],
            "duration_s": _dur(p["started_at"], p["ended_at"]),
            "checks": [], "failures": [], "mitigations": [], "calls": [], "cost_usd": 0.0,
        }
        phases.append(entry)
        by_id[p["id"]] = entry
    tokens_avoided = 0
    sandbox: dict[str, Any] | None = None
    for ev in events:
        found = by_id.get(ev["phase_id"] or "")
        pl = ev["payload"]
        if ev["kind"] == "sandbox":
            sandbox = {"mode": pl.get("mode"), "confined": bool(pl.get("confined")),
                       "network": pl.get("network"), "detail": pl.get("detail")}
        elif ev["kind"] == "check_finished" and found is not None:
            found["checks"].append({
                "attempt": ev["attempt"], "command": pl.get("command"),
                "exit_code": pl.get("exit_code"), "duration_s": pl.get("duration_s"),
                "timed_out": pl.get("timed_out", False),
            })
        elif ev["kind"] == "doctor_avoided":
            tokens_avoided += int(pl.get("tokens_avoided", 0) or 0)
        elif ev["kind"] == "classified" and found is not None:
            found["failures"].append({
                "attempt": ev["attempt"], "pattern": pl.get("pattern"),
                "evidence": pl.get("evidence", []), "command": pl.get("command"),
            })
        elif ev["kind"] == "mitigation" and found is not None:
            found["mitigations"].append({"attempt": ev["attempt"], **pl})
    cost = _costs(calls or [], by_id)
    budget = budget_summary(run, sum(tokens.values()), cost["total_usd"], events)
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
        "cost": cost,
        "budget": budget,
        "cache_hit_rate": cache_hit_rate(tokens),
        "tokens_avoided": tokens_avoided,
        "sandbox": sandbox,  # None: the run executed no command (or predates the sandbox)
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


def budget_summary(run: dict[str, Any], tokens_spent: int, usd_spent: float,
                   events: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's budgets next to what it spent, and the refused call's figures when a budget
    ended it (its ``budget_exhausted`` event): ``token_budget``, ``usd_budget``,
    ``phase_token_budget``, ``phase_usd_budget`` (``None``: no limit), ``tokens_spent``,
    ``usd_spent``, ``exhausted`` (``None``, or ``scope`` run/phase/daily, ``unit``
    tokens/usd, ``limit``, ``spent``, ``needed`` — the refused call's worst case —,
    ``input_tokens``, ``role``, ``phase``, ``attempt``, ``message``)."""
    try:
        limits = dict(json.loads(run.get("spec") or "{}").get("limits") or {})
    except (TypeError, ValueError):
        limits = {}
    exhausted = None
    for ev in events:
        if ev["kind"] == "budget_exhausted":
            pl = ev["payload"]
            exhausted = {k: pl.get(k) for k in ("scope", "unit", "limit", "spent", "needed",
                                                "input_tokens", "role", "message")}
            exhausted.update(phase=ev["phase_id"], attempt=ev["attempt"])
    return {"token_budget": limits.get("token_budget"), "usd_budget": limits.get("usd_budget"),
            "phase_token_budget": limits.get("phase_token_budget"),
            "phase_usd_budget": limits.get("phase_usd_budget"),
            "tokens_spent": tokens_spent, "usd_spent": usd_spent, "exhausted": exhausted}


def budget_line(b: dict[str, Any]) -> str:
    """``12,345 of 400,000 tokens, $0.0123 of $5.0000`` plus, when a budget ended the run,
    ``; exhausted: run budget (usd): $4.9990 of $5.0000 spent, the next call needed up to
    $0.0450``."""
    tokens = f"{b['tokens_spent']:,} of {b['token_budget']:,} tokens" if b.get("token_budget") \
        else f"{b['tokens_spent']:,} tokens (no token budget)"
    usd = f"${b['usd_spent']:.4f} of ${b['usd_budget']:.4f}" if b.get("usd_budget") is not None \
        else f"${b['usd_spent']:.4f} (no dollar budget)"
    phase = [f"{b[k]:,} tokens" if k.endswith("token_budget") else f"${b[k]:.4f}"
             for k in ("phase_token_budget", "phase_usd_budget") if b.get(k) is not None]
    out = f"{tokens}, {usd}" + (f"; per phase {' and '.join(phase)}" if phase else "")
    ex = b.get("exhausted")
    if ex:
        if ex.get("unit") == "usd":
            figures = (f"${float(ex['spent'] or 0):.4f} of ${float(ex['limit'] or 0):.4f} spent, "
                       f"the next call needed up to ${float(ex['needed'] or 0):.4f}")
        else:
            figures = (f"{int(ex['spent'] or 0):,} of {int(ex['limit'] or 0):,} tokens spent, "
                       f"the next call needed up to {int(ex['needed'] or 0):,}")
        where = f", phase {ex['phase']} attempt {ex['attempt']}" if ex.get("phase") else ""
        out += (f"; EXHAUSTED: {ex.get('scope')} budget ({ex.get('unit')}): {figures} "
                f"({ex.get('role')} call not made{where})")
    return out


def cache_hit_rate(tokens: dict[str, int]) -> float | None:
    """Share of prompt tokens read from the cache: cache reads / (input + cache writes +
    cache reads); ``None`` with no prompt tokens."""
    prompt = tokens.get("input", 0) + tokens.get("cache_creation", 0) + tokens.get("cache_read", 0)
    return round(tokens.get("cache_read", 0) / prompt, 4) if prompt else None


def _costs(calls: list[dict[str, Any]], by_id: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each call under its phase with its cost; totals by role. Costs are pUSD in the
    database (exact) and USD here."""
    total, unpriced = 0, 0
    by_role: dict[str, int] = {}
    for c in calls:
        pusd = c.get("cost_pusd")
        if pusd is None:
            unpriced += 1
        pusd = int(pusd or 0)
        total += pusd
        by_role[c["role"]] = by_role.get(c["role"], 0) + pusd
        phase = by_id.get(c.get("phase_id") or "")
        if phase is not None:
            phase["calls"].append({
                "attempt": c["attempt"], "role": c["role"], "model": c["model"],
                "input": c["input"], "output": c["output"], "cache_creation": c["cache_creation"],
                "cache_read": c["cache_read"], "cost_usd": pusd / PUSD_PER_USD})
            phase["cost_usd"] += pusd / PUSD_PER_USD
    return {"total_usd": total / PUSD_PER_USD, "calls": len(calls),
            "by_role_usd": {r: v / PUSD_PER_USD for r, v in sorted(by_role.items())},
            "unpriced_calls": unpriced}


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
    cost = rep.get("cost") or {}
    if cost:
        roles = ", ".join(f"{r} ${v:.4f}" for r, v in cost["by_role_usd"].items())
        hit = rep.get("cache_hit_rate")
        out.append(f"- **Cost:** ${cost['total_usd']:.4f} in {cost['calls']} LLM calls"
                   + (f" ({roles})" if roles else "")
                   + (f"; cache hit rate {hit:.0%}" if hit is not None else "")
                   + (f"; {cost['unpriced_calls']} calls recorded without a price"
                      if cost["unpriced_calls"] else ""))
    if rep.get("budget"):
        out.append(f"- **Budget:** {budget_line(rep['budget'])}")
    out.append(f"- **Arm:** {rep['arm']}")
    sb = rep.get("sandbox")
    if sb:
        out.append(f"- **Sandbox:** {sb['mode']}" + (f", network {sb['network']}" if sb["confined"]
                   else " — commands ran UNCONFINED (not in a sandbox)"))
    out += ["", "## Phases", "", "| phase | state | attempts | checks | failures | cost | commit |",
            "|---|---|---|---|---|---|---|"]
    for p in rep["phases"]:
        out.append(f"| {p['id']} | {p['state']} | {p['attempts']} | {len(p['checks'])} | "
                   f"{len(p['failures'])} | ${p.get('cost_usd', 0.0):.4f} | "
                   f"{(p['commit'] or '')[:12]} |")
    for p in rep["phases"]:
        if not (p["checks"] or p["failures"] or p["reason"] or p.get("calls")):
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
        for c in p.get("calls", []):
            out.append(f"- {c['role']} call (attempt {c['attempt']}, {c['model']}): "
                       f"{c['input']} in, {c['output']} out, {c['cache_creation']} cache write, "
                       f"{c['cache_read']} cache read: ${c['cost_usd']:.4f}")
    if rep["commits"]:
        out += ["", "## Commits", ""]
        out += [f"- `{c['sha'][:12]}` {c['subject']}" for c in rep["commits"]]
    tot = rep["totals"]
    out += ["", "## Totals", "",
            f"{tot['succeeded']}/{tot['phases']} phases succeeded; {tot['attempts']} attempts; "
            f"{tot['checks']} checks; {tot['failures']} failures; {tot['doctor_calls']} Doctor calls."]
    return "\n".join(out) + "\n"
