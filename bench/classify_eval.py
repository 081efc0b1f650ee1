"""Classifier precision and recall per taxonomy id on the corpus's dev and held-out splits.

    .venv/bin/python bench/classify_eval.py [--write] [--mistakes dev]

The corpus (``tests/fixtures/corpus``, captured by ``make corpus``) is split by
a rule written down in its ``capture.py`` and README: whole scenarios are held
out, and their logs are never read while patterns are written. This prints the
held-out table next to the dev table (the part patterns are tuned on) and the
original fixtures' table, so the gap between them is visible in the same run.

``--write`` also stores the output in ``bench/classify_eval.txt``: the
recorded held-out precision is the floor a new pattern must keep
(``tests/classifier/test_corpus_eval.py`` checks it). ``--mistakes dev``
lists the dev split's misclassified logs (never use it on ``heldout``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.classifier.corpus import evaluate, load, load_corpus  # noqa: E402

OUT = ROOT / "bench" / "classify_eval.txt"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="store the output in bench/classify_eval.txt")
    ap.add_argument("--mistakes", choices=["dev"], help="list the dev split's misclassified logs")
    args = ap.parse_args()
    t0 = time.perf_counter()
    dev = load_corpus("dev")
    held = load_corpus("heldout")
    r_held = evaluate(held)
    r_dev = evaluate(dev)
    r_fix = evaluate(load())
    elapsed = time.perf_counter() - t0
    lines = [
        "# Classifier precision/recall (bench/classify_eval.py). Split rule: tests/fixtures/corpus/README.md",
        f"# corpus: {len(dev)} dev + {len(held)} held-out logs; original fixtures: {r_fix.logs}; all classified in {elapsed:.1f} s",
        "",
        r_held.table("held-out split (never read while writing patterns)"),
        "",
        r_dev.table("dev split (patterns tuned here)"),
        "",
        r_fix.table("original fixtures (tests/fixtures/failures)"),
        "",
        f"held-out precision {r_held.overall_precision:.3f} (target >= 0.98, CI floor 0.97), "
        f"recall {r_held.overall_recall:.3f} (target >= 0.90)",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        OUT.write_text(text + "\n")
    if args.mistakes == "dev":
        print("\ndev mistakes (name, expected, got):")
        for name, exp, got in r_dev.mistakes:
            print(f"  {name:52s} {exp!s:22s} {got!s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
