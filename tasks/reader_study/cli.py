"""Command line of the reader-study scorer: score answer files against the key, print the figures
as JSON, and optionally write the JSON and an HTML summary and log them to MLflow."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cxrsynth.tasks.io import write_json, write_text
from cxrsynth.tasks.reader_study.scoring import answer_table, score_table


def _read_json(path: Path, what: str) -> dict:
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"reader study: cannot read the {what} {path}: {error}") from error
    if not isinstance(payload, dict):
        raise SystemExit(f"reader study: the {what} {path} is not a JSON object")
    return payload


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cxrsynth.tasks.reader_study",
                                     description="Score reader-study answers against the key.")
    parser.add_argument("key", type=Path, help="the study's key (reports/reader_study_key.json)")
    parser.add_argument("answers", type=Path, nargs="+", help="answer files exported from the study page")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--html", type=Path, help="write a summary page to this HTML file")
    parser.add_argument("--mlflow", action="store_true",
                        help="log the figures (and the files written) as an MLflow run, tracked as params.yaml says")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file for --mlflow")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    key = _read_json(args.key, "key")
    answer_sets = [(path.name, _read_json(path, "answers file")) for path in args.answers]
    try:
        result = score_table(answer_table(answer_sets, key), key)
    except ValueError as error:
        raise SystemExit(f"reader study: {error}") from error
    written = []
    if args.json:
        write_json(args.json, result)
        written.append(args.json)
    if args.html:
        from cxrsynth.tasks.reader_study.summary import render_summary  # matplotlib only when asked for

        write_text(args.html, render_summary(result))
        written.append(args.html)
    if args.mlflow:
        from cxrsynth.tasks.params import load_params
        from cxrsynth.tasks.reader_study.summary import log_to_mlflow

        print(f"MLflow run {log_to_mlflow(result, load_params(args.params), written)}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0
