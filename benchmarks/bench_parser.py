"""Measure the report parser: per-finding precision and recall of "present", attributes, speed, its errors.

    python benchmarks/bench_parser.py [--phantom data/phantom/truth.csv] [--openi ../shared/data/openi-reports]
                                      [--labelled my_reports.csv] [--json results.json]
                                      [--errors errors.csv|errors.md] [--errors-part all|readable|held-out]

(a) phantom: the generator's truth (tasks.reports.phantom_truth); (b) Open-i: the human-coded MeSH
majors of 1,008 real reports (tasks.reports.openi; MESH_TO_FINDING is the mapping), scored in two
parts: the readable half that rules may be tuned on, and the held-out half listed in
benchmarks/openi_held_out.txt that is only scored; (c) your own labelled reports: a CSV with
``report_id``, ``text`` and a 1/0/blank column per finding (tasks.reports.evaluation.load_labelled_reports).
A reference that is absent is skipped with a note. "present" is the parsed state 1; "present or
uncertain" is what ``uncertain_policy: positive`` would label. Speed is the rule parser's, caches
cleared. ``--errors`` writes every disagreement with its sentence (CSV, or markdown for ``.md``);
``--errors-part readable`` keeps the held-out Open-i reports out of it, so tuning never reads them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrsynth.tasks.findings import FINDINGS  # noqa: E402
from cxrsynth.tasks.reports.evaluation import (  # noqa: E402
    DISAGREEMENT_COLUMNS,
    attribute_accuracy,
    disagreements,
    load_labelled_reports,
    predicted_presence,
    presence_scores,
    state_accuracy,
    write_disagreements,
)
from cxrsynth.tasks.reports.rules import parse_reports, parse_sentence  # noqa: E402

DEFAULT_OPENI = ROOT.parent / "shared" / "data" / "openi-reports"
HELD_OUT = ROOT / "benchmarks" / "openi_held_out.txt"
READABLE, HELD_OUT_PART = "readable", "held-out"


def run(reference, name: str, part: str = "all") -> dict:
    """Scores of the rule parser on one reference frame (report_id, text, per-finding bools and attributes),
    and its disagreements (a frame, under "errors", tagged with ``part``)."""
    parse_sentence.cache_clear()
    started = time.perf_counter()
    parsed = parse_reports(reference["text"].tolist(), progress=False)
    seconds = time.perf_counter() - started
    errors = disagreements(parsed, reference)
    errors.insert(0, "part", part)
    return {
        "reference": name,
        "part": part,
        "reports": len(reference),
        "reports_per_second": len(reference) / seconds if seconds else float("inf"),
        "present": presence_scores(predicted_presence(parsed), reference),
        "present_or_uncertain": presence_scores(predicted_presence(parsed, count_uncertain=True), reference),
        "attributes": {a: attribute_accuracy(parsed, reference, a) for a in ("laterality", "location", "severity")},
        "state": state_accuracy(parsed, reference),
        "errors": errors,
    }


def openi_parts(folder: Path, held_out_list: Path = HELD_OUT) -> list[tuple[str, pd.DataFrame]]:
    """The Open-i reports split into the readable and the held-out part by the committed list."""
    from cxrsynth.tasks.reports.openi import load_openi, read_held_out

    reference = load_openi(folder)
    held_out = reference["report_id"].isin(read_held_out(held_out_list))
    return [(READABLE, reference[~held_out].reset_index(drop=True)),
            (HELD_OUT_PART, reference[held_out].reset_index(drop=True))]


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


def collect(args: argparse.Namespace) -> list[dict]:
    """Run every reference that is present; note the ones that are not."""
    results = []
    if args.phantom.exists():
        from cxrsynth.tasks.reports.phantom_truth import load_phantom_truth

        results.append(run(load_phantom_truth(args.phantom), f"phantom ({args.phantom})", "phantom"))
    else:
        print(f"skipped phantom: {args.phantom} not found (run the phantom stage, or pass --phantom)")
    if args.openi.is_dir():
        for part, reference in openi_parts(args.openi, args.held_out):
            results.append(run(reference, f"Open-i MeSH, {part} part ({args.openi})", part))
    else:
        print(f"skipped Open-i: {args.openi} not found")
    if args.labelled:
        results.append(run(load_labelled_reports(args.labelled), f"labelled reports ({args.labelled})", "labelled"))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantom", type=Path, default=ROOT / "data" / "phantom" / "truth.csv",
                        help="the phantom generator's truth.csv (reports and labels.csv beside it)")
    parser.add_argument("--openi", type=Path, default=DEFAULT_OPENI, help="folder of the Open-i XML reports")
    parser.add_argument("--held-out", type=Path, default=HELD_OUT, help="the Open-i held-out list (file names)")
    parser.add_argument("--labelled", type=Path, default=None,
                        help="your own labelled reports: CSV with report_id, text and a 1/0/blank column per finding")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--errors", type=Path, default=None,
                        help="write every disagreement with its sentence to this .csv or .md file")
    parser.add_argument("--errors-part", default="all", choices=["all", READABLE, HELD_OUT_PART],
                        help="which Open-i part's disagreements --errors writes (other references always)")
    args = parser.parse_args(argv)

    results = collect(args)
    for result in results:
        print_result(result)
    if args.errors:
        hidden = {READABLE, HELD_OUT_PART} - {args.errors_part} if args.errors_part != "all" else set()
        frames = [r["errors"] for r in results if r["part"] not in hidden]
        empty = pd.DataFrame(columns=["part", *DISAGREEMENT_COLUMNS])
        errors = pd.concat(frames, ignore_index=True) if frames else empty
        write_disagreements(errors, args.errors)
        print(f"\n{len(errors)} disagreements written to {args.errors}")
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "errors"} for r in results],
                                        indent=2) + "\n")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
