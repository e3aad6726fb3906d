"""Measure the report parser: per-finding precision and recall of "present", attributes, speed.

    python benchmarks/bench_parser.py [--phantom data/phantom/truth.csv] [--openi ../shared/data/openi-reports]
                                      [--json results.json]

(a) phantom: the generator's truth (tasks.reports.phantom_truth); (b) Open-i: the human-coded MeSH
majors of 1,008 real reports (tasks.reports.openi; MESH_TO_FINDING is the mapping). A reference
that is absent is skipped with a note. "present" is the parsed state 1; "present or uncertain"
is what ``uncertain_policy: positive`` would label. Speed is the rule parser's, caches cleared.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrsynth.tasks.findings import FINDINGS  # noqa: E402
from cxrsynth.tasks.reports.evaluation import (  # noqa: E402
    attribute_accuracy,
    predicted_presence,
    presence_scores,
    state_accuracy,
)
from cxrsynth.tasks.reports.rules import parse_reports, parse_sentence  # noqa: E402

DEFAULT_OPENI = ROOT.parent / "shared" / "data" / "openi-reports"


def run(reference, name: str) -> dict:
    """Scores of the rule parser on one reference frame (report_id, text, per-finding bools and attributes)."""
    parse_sentence.cache_clear()
    started = time.perf_counter()
    parsed = parse_reports(reference["text"].tolist(), progress=False)
    seconds = time.perf_counter() - started
    return {
        "reference": name,
        "reports": len(reference),
        "reports_per_second": len(reference) / seconds if seconds else float("inf"),
        "present": presence_scores(predicted_presence(parsed), reference),
        "present_or_uncertain": presence_scores(predicted_presence(parsed, count_uncertain=True), reference),
        "attributes": {a: attribute_accuracy(parsed, reference, a) for a in ("laterality", "location", "severity")},
        "state": state_accuracy(parsed, reference),
    }


def print_result(result: dict) -> None:
    print(f"\n== {result['reference']}: {result['reports']} reports, "
          f"rule parser {result['reports_per_second']:.0f} reports/s")
    print(f"{'finding':18s} {'n':>4s} {'P':>6s} {'R':>6s} {'tp':>4s} {'fp':>4s} {'fn':>4s} | "
          f"{'P(+unc)':>8s} {'R(+unc)':>8s}")
    for finding in FINDINGS:
        s, u = result["present"][finding], result["present_or_uncertain"][finding]
        print(f"{finding:18s} {s['n_reference']:4d} {s['precision']:6.3f} {s['recall']:6.3f} {s['tp']:4d} {s['fp']:4d} "
              f"{s['fn']:4d} | {u['precision']:8.3f} {u['recall']:8.3f}")
    if result["state"]:
        print("state (present / absent / uncertain / not mentioned) accuracy: "
              + ", ".join(f"{f} {v['accuracy']:.3f}" for f, v in result["state"].items()))
    for attribute, per_finding in result["attributes"].items():
        if per_finding:
            print(f"{attribute} accuracy on true positives: "
                  + ", ".join(f"{f} {v['accuracy']:.2f} (n={v['n']})" for f, v in per_finding.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom", type=Path, default=ROOT / "data" / "phantom" / "truth.csv",
                        help="the phantom generator's truth.csv (reports and labels.csv beside it)")
    parser.add_argument("--openi", type=Path, default=DEFAULT_OPENI, help="folder of the Open-i XML reports")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)

    results = []
    if args.phantom.exists():
        from cxrsynth.tasks.reports.phantom_truth import load_phantom_truth

        results.append(run(load_phantom_truth(args.phantom), f"phantom ({args.phantom})"))
    else:
        print(f"skipped phantom: {args.phantom} not found (run the phantom stage, or pass --phantom)")
    if args.openi.is_dir():
        from cxrsynth.tasks.reports.openi import load_openi

        results.append(run(load_openi(args.openi), f"Open-i MeSH ({args.openi})"))
    else:
        print(f"skipped Open-i: {args.openi} not found")
    for result in results:
        print_result(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
