"""A/B benchmark: failure hardening + intention context on (``hardened``) vs off (``baseline``).

Usage::

    .venv/bin/python bench/ab.py [--json] [--save FILE] [--only SUBSTR] [--timeout 170]

What it does. Every scenario of ``bench/ab/scenarios/*.json`` (see
``bench/ab/gen_scenarios.py`` for the format) is a tiny git repository, a run
spec and the scripted Builder/Doctor conversation. One scripted Messages API
server (``autopack.testing``) and one real ``autopackd``
(``max_concurrent_runs = 4``) per arm run every scenario once per arm
(``Submit(arm="hardened")``, then ``Submit(arm="baseline")``), each on its own
copy of the repository; one server per arm so that neither arm reads what the
other wrote to the prompt cache (``--shared-cache``: one of each, interleaved). Missing dependencies are local wheels written here
(offline; the daemon gets ``PIP_NO_INDEX=1`` and ``PIP_FIND_LINKS``).

What is measured. Per arm: runs, runs succeeded, tokens spent (input, output,
cache write, cache read, total) as the daemon accounted them (``llm_calls``
through the real ``anthropic`` SDK), Doctor calls, attempts, failures and how
they were handled (safe action, classifier hint, Doctor), and the daemon's own
``tokens_avoided`` estimate. The per-failure saving is

    (baseline tokens - hardened tokens) / failures handled deterministically
                                          in the hardened arm (action or hint)

The per-call token figures are *scripted* (realistic sizes, see the
generator's docstring): the saving is the difference the hardening makes in
the number and kind of calls, priced with those figures. The scripted server
answers with fixed usage whatever the prompt holds, so the intention context's
own prompt cost is not in the token figures; its size is reported separately
(bytes of context per Builder attempt, from the ``builder_started`` events).

Everything runs on loopback in one temp dir that is removed at the end.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from _common import BenchDaemon, emit, git, machine, wait_until, workspace
from autopack.protocol import (
    EventMsg,
    Follow,
    GetReport,
    GetStats,
    Submit,
    parse_spec_text,
)

HERE = Path(__file__).parent
SETS = {"corpus": HERE / "ab" / "corpus", "handmade": HERE / "ab" / "scenarios"}
BOOTSTRAP = 2000  # resamples of the scenarios for the 95% intervals
ARMS = ("hardened", "baseline")
TOKEN_KINDS = ("input", "output", "cache_creation", "cache_read")
TERMINAL = ("succeeded", "failed", "cancelled")
FAKE_KEY = "sk-ant-bench-scripted-not-a-real-key"


# ------------------------------------------------------------------ inputs
def load_scenarios(only: str | None, which: str = "corpus") -> list[dict[str, Any]]:
    out = [json.loads(p.read_text()) for p in sorted(SETS[which].glob("*.json"))]
    return [s for s in out if not only or only in s["id"]]


def write_wheel(dest: Path, module: str, source: str, version: str = "1.0",
                dist: str | None = None) -> Path:
    """A pure-Python wheel of one module package, written directly (no build backend,
    no network): ``<module>/__init__.py`` with ``source``, METADATA, WHEEL, RECORD.
    ``dist`` names the distribution when it differs from the module (PyYAML: yaml)."""
    wheel_name = (dist or module).replace("-", "_")
    dist_info = f"{wheel_name}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": source.encode(),
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {dist or module}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: autopack-bench\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = dest / f"{wheel_name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_scenario_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def check_matches(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All scripts in one list; refuse a match string that is a substring of another
    (the model server routes to the first script whose match appears)."""
    scripts = [sc for s in scenarios for sc in s["scripts"]]
    matches = [sc["match"] for sc in scripts]
    for i, a in enumerate(matches):
        for j, b in enumerate(matches):
            if i != j and a in b:
                raise SystemExit(f"ambiguous scripts: {a!r} is part of {b!r}")
    return scripts


# ------------------------------------------------------------------ the model server
class ModelServer:
    def __init__(self, scenario: Path, log: Path) -> None:
        self.logf = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "autopack.testing", "--scenario", str(scenario),
             "--port", "0"], stdout=subprocess.PIPE, stderr=self.logf, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"model server did not start: {self.url!r}")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_stats", timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.logf.close()


# ------------------------------------------------------------------ per run
def run_facts(client: Any, run_id: str) -> dict[str, Any]:
    """Report figures plus what the events say about each failure's handling."""
    rep = client.request(GetReport(run_id=run_id)).data
    events: list[EventMsg] = []
    for msg in client.stream(Follow(run_id=run_id)):
        if not isinstance(msg, EventMsg):
            break
        events.append(msg)
    handled: Counter[str] = Counter()
    patterns: list[str] = []
    context_bytes: list[int] = []
    builder_attempts = 0
    credited = 0
    detail: list[dict[str, Any]] = []
    for ev in events:
        pl = ev.payload
        if ev.kind == "builder_started":
            builder_attempts += 1
            context_bytes.append(int(pl.get("context_bytes", 0) or 0))
        elif ev.kind == "classified":
            patterns.append(pl.get("pattern") or "none")
            detail.append({"phase": ev.phase_id, "attempt": ev.attempt, "pattern": pl.get("pattern"),
                           "decision": pl.get("decision"), "reason": pl.get("reason"),
                           "evidence": list(pl.get("evidence") or [])[:3]})
            decision = str(pl.get("decision"))
            if pl.get("pattern") is None:
                handled["doctor" if decision == "doctor" else "unclassified_" + decision] += 1
            elif decision == "mitigate":
                handled["action"] += 1
            elif decision == "retry":
                handled["hint"] += 1
            else:
                handled["classified_" + decision] += 1
        elif ev.kind == "doctor_avoided":
            credited += 1
        elif ev.kind == "mitigation" and not (pl.get("ok") and pl.get("acted")):
            handled["action_failed"] += 1
    tokens = {k: int(rep["tokens"].get(k, 0)) for k in TOKEN_KINDS}
    cost = rep.get("cost") or {}
    return {
        "cost_usd": float(cost.get("total_usd", 0.0)),
        "cost_by_role": dict(cost.get("by_role_usd", {})),
        "cache_hit_rate": rep.get("cache_hit_rate"),
        "run_id": run_id, "state": rep["state"], "reason": rep["reason"], "arm": rep["arm"],
        "tokens": {**tokens, "total": sum(tokens.values())},
        "tokens_avoided": int(rep["tokens_avoided"]), "avoided_credited": credited,
        "attempts": int(rep["totals"]["attempts"]), "doctor_calls": int(rep["totals"]["doctor_calls"]),
        "failures": int(rep["totals"]["failures"]), "builder_attempts": builder_attempts,
        "patterns": patterns, "handled": dict(handled), "context_bytes": context_bytes, "failure_detail": detail,
        "duration_s": rep["duration_s"],
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    tokens = {k: sum(r["tokens"][k] for r in runs) for k in (*TOKEN_KINDS, "total")}
    handled: Counter[str] = Counter()
    for r in runs:
        handled.update(r["handled"])
    ctx = [b for r in runs for b in r["context_bytes"]]
    return {
        "runs": len(runs), "succeeded": sum(r["state"] == "succeeded" for r in runs),
        "tokens": tokens, "tokens_per_run": round(tokens["total"] / len(runs)) if runs else 0,
        "cost_usd": round(sum(r["cost_usd"] for r in runs), 6),
        "cost_usd_builder": round(sum(r["cost_by_role"].get("builder", 0.0) for r in runs), 6),
        "cost_usd_doctor": round(sum(r["cost_by_role"].get("doctor", 0.0) for r in runs), 6),
        "cache_hit_rate": round(tokens["cache_read"] / max(1, tokens["input"] + tokens["cache_creation"]
                                                          + tokens["cache_read"]), 4),
        "doctor_calls": sum(r["doctor_calls"] for r in runs),
        "attempts": sum(r["attempts"] for r in runs),
        "builder_attempts": sum(r["builder_attempts"] for r in runs),
        "failures": sum(r["failures"] for r in runs),
        "handled": dict(sorted(handled.items())),
        "deterministic": handled["action"] + handled["hint"],
        "tokens_avoided": sum(r["tokens_avoided"] for r in runs),
        "avoided_credited": sum(r["avoided_credited"] for r in runs),
        "run_s_mean": round(sum(r["duration_s"] or 0 for r in runs) / len(runs), 2) if runs else 0,
        "context_bytes_mean": round(sum(ctx) / len(ctx)) if ctx else 0,
        "context_bytes_max": max(ctx) if ctx else 0,
    }


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--only", help="run only scenarios whose id contains this")
    ap.add_argument("--set", choices=sorted(SETS), default="corpus",
                    help="corpus: replays of failures captured from real tools (default); "
                         "handmade: the 25 scenarios of issue 5")
    ap.add_argument("--save", type=Path, help="also write the JSON result to this file")
    ap.add_argument("--timeout", type=float, default=400.0, help="seconds to wait for each arm's runs")
    ap.add_argument("--shared-cache", action="store_true",
                    help="both arms on one daemon and one server, interleaved (one prompt cache: "
                         "the arm that runs second reads what the first wrote; the old layout)")
    ap.add_argument("--retry-model", default="",
                    help="the daemon's builder_retry_model (a cheaper model for named retries)")
    ap.add_argument("--retry-on", choices=("precise", "named"), default="precise",
                    help="the daemon's builder_retry_model_on")
    args = ap.parse_args()
    scenarios = load_scenarios(args.only, args.set)
    if not scenarios:
        print("no scenarios", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    config: dict[str, Any] = {}
    if args.retry_model:
        config.update(builder_retry_model=args.retry_model, builder_retry_model_on=args.retry_on)
    with workspace("ab") as root:
        wheels = root / "wheels"
        wheels.mkdir()
        for s in scenarios:
            for module, source in s["wheels"].items():
                dist = s.get("dists", {}).get(module)
                if not (wheels / f"{(dist or module).replace('-', '_')}-1.0-py3-none-any.whl").exists():
                    write_wheel(wheels, module, source, dist=dist)
        model_file = root / "model.json"
        model_file.write_text(json.dumps({"scripts": check_matches(scenarios)}))
        # one server (one prompt cache) and one daemon per arm, arm after arm, so neither arm
        # reads what the other wrote to the cache: each pays what it would pay alone
        passes = [ARMS] if args.shared_cache else [(arm,) for arm in ARMS]
        part: list[dict[str, Any]] = []
        for arms in passes:
            name = "-".join(arms)
            server = ModelServer(model_file, root / f"model-{name}.log")
            saved_env = {k: os.environ.get(k) for k in
                         ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "PIP_NO_INDEX", "PIP_FIND_LINKS")}
            os.environ.update({"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": FAKE_KEY,
                               "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)})
            try:
                # the local wheelhouse must be readable inside the runs' sandbox
                with BenchDaemon(root, name=f"state-{name}", max_concurrent_runs=4,
                                 builder_attempt_wall_s=60, log_level="WARNING",
                                 sandbox_read_only=[str(wheels)], **config) as d:
                    d.start()
                    got = drive(d, root, scenarios, args.timeout, arms)
                    got["spend"] = spend_breakdown(d.state_dir / "autopack.db", got["per_run"])
                    got["served"] = server.stats()
                    part.append(got)
            finally:
                server.stop()
                for k, v in saved_env.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    result = combine(part, scenarios)
    result["settings"] = config
    result["cache"] = "shared by both arms" if args.shared_cache else "one per arm"
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    if args.save:
        args.save.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    emit(result, args.json, render(result))
    return 0 if result["complete"] else 1


def drive(d: BenchDaemon, root: Path, scenarios: list[dict[str, Any]], timeout: float,
          arms: tuple[str, ...]) -> dict[str, Any]:
    """Submit every scenario once per arm of ``arms`` to ``d``, wait, collect the facts."""
    submitted: list[tuple[dict[str, Any], str, str]] = []  # (scenario, arm, run id)
    with d.client() as c:
        for s in scenarios:
            spec = parse_spec_text(json.dumps(s["spec"]), fmt="json")
            for arm in arms:
                repo = make_scenario_repo(root / "repos" / f"{s['id']}-{arm}", s["files"])
                run_id = c.request(Submit(spec=spec, repo=str(repo), arm=arm)).run_id
                submitted.append((s, arm, run_id))
        t0 = time.monotonic()
        ids = {rid for _, _, rid in submitted}

        def all_done() -> bool:
            runs = list(c.runs())
            return all(r.state in TERMINAL for r in runs if r.run_id in ids)

        complete = True
        try:
            wait_until(all_done, timeout, poll_s=0.25, what="all runs ended")
        except TimeoutError:
            complete = False
        wall = time.monotonic() - t0
        per_run = []
        for s, arm, rid in submitted:
            facts = run_facts(c, rid)
            facts.update(scenario=s["id"], category=s["category"], arm=arm)
            per_run.append(facts)
        stats = c.request(GetStats(by_arm=True)).data
    return {"per_run": per_run, "stats": stats, "complete": complete, "wall": wall}


def combine(part: list[dict[str, Any]], scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    per_run = [r for p in part for r in p["per_run"]]
    complete = all(p["complete"] for p in part)
    wall = sum(p["wall"] for p in part)
    stats: dict[str, Any] = {"arms": {}}
    for p in part:  # each daemon ran its own arm(s): take only those
        ran = {r["arm"] for r in p["per_run"]}
        stats["arms"].update({a: v for a, v in p["stats"].get("arms", {}).items() if a in ran})
    served_usage: Counter[str] = Counter()
    by_status: Counter[str] = Counter()
    unscripted = 0
    for p in part:
        served_usage.update(p["served"].get("usage_totals", {}))
        by_status.update(p["served"].get("by_status", {}))
        unscripted += int(p["served"].get("unscripted", 0))
    served = {"usage_totals": dict(served_usage), "by_status": dict(by_status),
              "unscripted": unscripted}
    spend: dict[str, Any] = {}
    for p in part:
        spend.update({arm: cells for arm, cells in p["spend"].items() if cells})
    arms = {arm: aggregate([r for r in per_run if r["arm"] == arm]) for arm in ARMS}
    for arm in ARMS:  # the daemon's own split of tokens by role (llm_calls.role)
        by_role = stats.get("arms", {}).get(arm, {}).get("tokens_by_role", {})
        arms[arm]["tokens_builder"] = int(by_role.get("builder", 0))
        arms[arm]["tokens_doctor"] = int(by_role.get("doctor", 0))
    hard, base = arms["hardened"], arms["baseline"]
    saved = base["tokens"]["total"] - hard["tokens"]["total"]
    det = hard["deterministic"]
    accounted = {k: sum(a["tokens"][k] for a in arms.values()) for k in TOKEN_KINDS}
    served_usage = served.get("usage_totals", {})
    server_agrees = accounted == {
        "input": served_usage.get("input_tokens"), "output": served_usage.get("output_tokens"),
        "cache_creation": served_usage.get("cache_creation_input_tokens"),
        "cache_read": served_usage.get("cache_read_input_tokens")}
    by_category: dict[str, dict[str, int]] = {}
    pairs = []
    for s in scenarios:
        h = next(r for r in per_run if r["scenario"] == s["id"] and r["arm"] == "hardened")
        b = next(r for r in per_run if r["scenario"] == s["id"] and r["arm"] == "baseline")
        delta = b["tokens"]["total"] - h["tokens"]["total"]
        pairs.append({"scenario": s["id"], "category": s["category"], "hardened": h, "baseline": b,
                      "saved": delta, "expect": s["expect"]})
        cat = by_category.setdefault(s["category"], {"scenarios": 0, "saved": 0, "deterministic": 0,
                                                     "doctor_calls_avoided": 0})
        cat["scenarios"] += 1
        cat["saved"] += delta
        cat["deterministic"] += h["handled"].get("action", 0) + h["handled"].get("hint", 0)
        cat["doctor_calls_avoided"] += b["doctor_calls"] - h["doctor_calls"]
    for cat in by_category.values():
        cat["saved_per_failure"] = round(cat["saved"] / cat["deterministic"]) if cat["deterministic"] else 0
    return {
        "intervals": intervals(pairs),
        "machine": machine(), "scenarios": len(scenarios), "runs": len(per_run), "spend": spend,
        "complete": complete and all(r["state"] in TERMINAL for r in per_run),
        "wall_s": round(wall, 1), "arms": arms,
        "saving": {
            "tokens_saved": saved,
            "deterministic_failures": det,
            "tokens_saved_per_deterministic_failure": round(saved / det) if det else None,
            "doctor_calls_avoided": base["doctor_calls"] - hard["doctor_calls"],
            "tokens_saved_per_doctor_call_avoided":
                round(saved / (base["doctor_calls"] - hard["doctor_calls"]))
                if base["doctor_calls"] > hard["doctor_calls"] else None,
            "saved_on_doctor_calls": base["tokens_doctor"] - hard["tokens_doctor"],
            "saved_on_builder_attempts": base["tokens_builder"] - hard["tokens_builder"],
            "daemon_tokens_avoided": hard["tokens_avoided"],
            "daemon_avoided_credited_failures": hard["avoided_credited"],
            "daemon_tokens_avoided_per_credited_failure":
                round(hard["tokens_avoided"] / hard["avoided_credited"]) if hard["avoided_credited"] else None,
        },
        "by_category": by_category,
        "pairs": pairs,
        "daemon_stats_by_arm": stats,
        "model_server": {"requests_by_status": served.get("by_status"),
                         "unscripted": served.get("unscripted"), "usage_totals": served_usage,
                         "agrees_with_daemon_accounting": server_agrees},
    }


def spend_breakdown(db: Path, per_run: list[dict[str, Any]]) -> dict[str, Any]:
    """Where each arm's dollars go, from the daemon's own ``llm_calls`` rows: per role, first
    attempt or retry, turn of the attempt, and token kind (each priced at its model's row of
    the shipped table, as the daemon priced it). Read once the runs have ended."""
    import sqlite3

    from autopack.actors._budget import DEFAULT_PRICES, price_for

    arm_of = {r["run_id"]: r["arm"] for r in per_run}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT run_id, phase_id, attempt, role, model, input_tokens, "
                            "output_tokens, cache_creation, cache_read FROM llm_calls ORDER BY id").fetchall()
    finally:
        conn.close()
    out: dict[str, dict[str, dict[str, float]]] = {arm: {} for arm in ARMS}
    turn: Counter[tuple[str, str, int]] = Counter()
    for run_id, phase_id, attempt, role, model, inp, outp, cw, cr in rows:
        arm = arm_of.get(run_id)
        if arm is None:
            continue
        key3 = (run_id, str(phase_id), int(attempt or 0))
        n = turn[key3] if role == "builder" else 0
        if role == "builder":
            turn[key3] += 1
        label = f"{role} {'first' if int(attempt or 0) <= 1 else 'retry'}" + (
            f" turn {n + 1}" if role == "builder" else "") + f" [{model}]"
        price, _ = price_for(str(model), DEFAULT_PRICES)
        cell = out[arm].setdefault(label, {"calls": 0, "input": 0, "output": 0, "cache_write": 0,
                                           "cache_read": 0, "usd_input": 0.0, "usd_output": 0.0,
                                           "usd_cache_write": 0.0, "usd_cache_read": 0.0})
        cell["calls"] += 1
        for kind, tokens, per_m in (("input", inp, price.input), ("output", outp, price.output),
                                    ("cache_write", cw, price.cache_write),
                                    ("cache_read", cr, price.cache_read)):
            cell[kind] += int(tokens)
            cell[f"usd_{kind}"] += int(tokens) * per_m / 1e6
    return {arm: dict(sorted(cells.items())) for arm, cells in out.items()}


def render_spend(spend: dict[str, Any]) -> list[str]:
    out = ["", "Where the dollars go (daemon's llm_calls; $ per token kind):", "",
           "| arm | calls of | n | input | output | cache write | cache read | $ in | $ out "
           "| $ cw | $ cr | $ total |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm in ARMS:
        for label, c in spend.get(arm, {}).items():
            total = c["usd_input"] + c["usd_output"] + c["usd_cache_write"] + c["usd_cache_read"]
            out.append(f"| {arm} | {label} | {c['calls']} | {c['input']:,} | {c['output']:,} "
                       f"| {c['cache_write']:,} | {c['cache_read']:,} | {c['usd_input']:.4f} "
                       f"| {c['usd_output']:.4f} | {c['usd_cache_write']:.4f} "
                       f"| {c['usd_cache_read']:.4f} | {total:.4f} |")
    return out


METRICS = {  # per-run figure -> how to read it from one run's facts
    "dollars": lambda r: r["cost_usd"],
    "tokens": lambda r: r["tokens"]["total"],
    "success": lambda r: 1.0 if r["state"] == "succeeded" else 0.0,
    "doctor_calls": lambda r: r["doctor_calls"],
    "attempts": lambda r: r["attempts"],
}


def _quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[int(0.025 * (len(ordered) - 1))], ordered[int(0.975 * (len(ordered) - 1))]


def intervals(pairs: list[dict[str, Any]], reps: int = BOOTSTRAP, seed: int = 20261202) -> dict[str, Any]:
    """Per-run means of each metric per arm with 95% percentile bootstrap intervals, and the
    hardened/baseline ratio of total dollars and tokens (paired: both arms of a resampled
    scenario go together). Resamples scenarios with replacement, seeded (reproducible)."""
    import random

    rng = random.Random(seed)
    n = len(pairs)
    out: dict[str, Any] = {"reps": reps, "seed": seed}
    if not n:
        return out
    draws = [[rng.randrange(n) for _ in range(n)] for _ in range(reps)]
    for name, get in METRICS.items():
        entry: dict[str, Any] = {}
        for arm in ARMS:
            vals = [float(get(p[arm])) for p in pairs]
            means = [sum(vals[i] for i in d) / n for d in draws]
            lo, hi = _quantiles(means)
            entry[arm] = {"mean": sum(vals) / n, "lo": lo, "hi": hi}
        out[name] = entry
    for name in ("dollars", "tokens"):
        get = METRICS[name]
        h = [float(get(p["hardened"])) for p in pairs]
        b = [float(get(p["baseline"])) for p in pairs]
        ratios = [sum(h[i] for i in d) / max(1e-12, sum(b[i] for i in d)) for d in draws]
        lo, hi = _quantiles(ratios)
        out[f"{name}_ratio"] = {"ratio": sum(h) / max(1e-12, sum(b)), "lo": lo, "hi": hi}
    return out


def render_intervals(iv: dict[str, Any]) -> list[str]:
    if "dollars" not in iv:
        return []
    fmt = {"dollars": "${:.4f}", "tokens": "{:,.0f}", "success": "{:.1%}",
           "doctor_calls": "{:.2f}", "attempts": "{:.2f}"}
    out = ["", f"Per run, mean [95% bootstrap interval, {iv['reps']} resamples of the scenarios]:", "",
           "| per run | hardened | baseline |", "|---|---|---|"]
    for name, f in fmt.items():
        cells = [f"{f.format(iv[name][a]['mean'])} [{f.format(iv[name][a]['lo'])}, "
                 f"{f.format(iv[name][a]['hi'])}]" for a in ARMS]
        out.append(f"| {name} | {cells[0]} | {cells[1]} |")
    for name in ("dollars", "tokens"):
        r = iv[f"{name}_ratio"]
        out.append(f"\nhardened / baseline, {name}: {r['ratio']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] "
                   f"= {1 - r['ratio']:.1%} cheaper [{1 - r['hi']:.1%}, {1 - r['lo']:.1%}]")
    return out


def render(r: dict[str, Any]) -> list[str]:
    a = r["arms"]
    rows = [
        ("runs", "runs"), ("succeeded", "succeeded"), ("tokens: input", ("tokens", "input")),
        ("tokens: output", ("tokens", "output")), ("tokens: cache write", ("tokens", "cache_creation")),
        ("tokens: cache read", ("tokens", "cache_read")), ("tokens: total", ("tokens", "total")),
        ("tokens per run", "tokens_per_run"), ("dollars, total", "cost_usd"),
        ("dollars: Builder calls", "cost_usd_builder"), ("dollars: Doctor calls", "cost_usd_doctor"),
        ("cache hit rate", "cache_hit_rate"), ("tokens: Builder calls", "tokens_builder"),
        ("tokens: Doctor calls", "tokens_doctor"), ("Doctor calls", "doctor_calls"),
        ("attempts", "attempts"), ("Builder attempts", "builder_attempts"),
        ("failed checks (classified events)", "failures"),
        ("  handled by a safe action", ("handled", "action")),
        ("  handled by a classifier hint", ("handled", "hint")),
        ("  sent to the Doctor", ("handled", "doctor")),
        ("daemon's tokens_avoided", "tokens_avoided"),
        ("intention context bytes / Builder attempt (mean)", "context_bytes_mean"),
        ("run duration, mean s", "run_s_mean"),
    ]

    def get(arm: dict[str, Any], key: Any) -> Any:
        if isinstance(key, tuple):
            return arm[key[0]].get(key[1], 0)
        return arm[key]

    out = [f"A/B: {r['scenarios']} scenarios x 2 arms = {r['runs']} runs in {r['wall_s']} s "
           f"(all ended: {r['complete']}); prompt cache: {r.get('cache')}; "
           f"settings: {r.get('settings') or 'defaults'}", "",
           f"| {'figure':<50} | {'hardened':>10} | {'baseline':>10} |", f"|{'-' * 52}|{'-' * 12}|{'-' * 12}|"]
    for label, key in rows:
        out.append(f"| {label:<50} | {get(a['hardened'], key):>10} | {get(a['baseline'], key):>10} |")
    out += render_intervals(r.get("intervals", {}))
    out += render_spend(r.get("spend", {}))
    s = r["saving"]
    out += ["",
            f"tokens saved by the hardened arm: {s['tokens_saved']} over {s['deterministic_failures']} "
            f"failures handled deterministically = {s['tokens_saved_per_deterministic_failure']} tokens "
            f"per failure (measured)",
            f"  of which Doctor calls: {s['saved_on_doctor_calls']}, Builder attempts: "
            f"{s['saved_on_builder_attempts']}",
            f"Doctor calls avoided: {s['doctor_calls_avoided']} "
            f"({s['tokens_saved_per_doctor_call_avoided']} tokens saved per avoided call)",
            f"daemon's own tokens_avoided estimate: {s['daemon_tokens_avoided']} over "
            f"{s['daemon_avoided_credited_failures']} credited failures "
            f"({s['daemon_tokens_avoided_per_credited_failure']} each)",
            f"model server usage equals the daemon's accounting: "
            f"{r['model_server']['agrees_with_daemon_accounting']}; "
            f"requests by status {r['model_server']['requests_by_status']}, "
            f"unscripted {r['model_server']['unscripted']}", "",
            "| category | scenarios | failures handled deterministically | Doctor calls avoided "
            "| tokens saved | per failure |", "|---|---|---|---|---|---|"]
    for cat, c in sorted(r["by_category"].items()):
        out.append(f"| {cat} | {c['scenarios']} | {c['deterministic']} | {c['doctor_calls_avoided']} "
                   f"| {c['saved']} | {c['saved_per_failure']} |")
    out += ["", "| scenario | hardened: state, attempts, Doctor, tokens, $, patterns | "
                "baseline: state, attempts, Doctor, tokens, $ | saved tokens |", "|---|---|---|---|"]
    for p in r["pairs"]:
        h, b = p["hardened"], p["baseline"]
        out.append(f"| {p['scenario']} | {h['state']}, {h['attempts']}, {h['doctor_calls']}, "
                   f"{h['tokens']['total']}, {h['cost_usd']:.4f}, {'/'.join(h['patterns']) or '-'} | "
                   f"{b['state']}, {b['attempts']}, {b['doctor_calls']}, {b['tokens']['total']}, "
                   f"{b['cost_usd']:.4f} | {p['saved']} |")
    return out


if __name__ == "__main__":
    sys.exit(main())
