"""The ``cxrsynth`` command: run one stage, the whole pipeline, or serve it on a schedule."""

from __future__ import annotations

import argparse
import importlib
import sys

# stage name -> "module:flow function"; imported only when the stage runs, so --help is instant.
STAGES: dict[str, str] = {
    "phantom": "flows.phantom:phantom_flow",
    "ingest": "flows.ingest:ingest_flow",
    "parse_reports": "flows.parse_reports:parse_reports_flow",
    "prepare_masks": "flows.prepare_masks:prepare_masks_flow",
    "train_diffusion": "flows.train_diffusion:train_diffusion_flow",
    "generate": "flows.generate:generate_flow",
    "mix": "flows.mix:mix_flow",
    "train_classifier": "flows.train_classifier:train_classifier_flow",
    "evaluate": "flows.evaluate:evaluate_flow",
}


def load_flow(target: str):
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrsynth",
        description="Lesion-preserving synthetic chest radiographs for rare findings, as a DVC + Prefect + MLflow pipeline.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    stage = commands.add_parser("stage", help="run one DAG stage as a Prefect flow (what dvc.yaml calls)")
    stage.add_argument("name", choices=sorted(STAGES), help="stage to run")
    stage.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    stage.add_argument("--variant", default=None, help="mix / train_classifier: the variant to build")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "stage":
        flow = load_flow(STAGES[args.name])
        kwargs = {"params_path": args.params}
        if args.variant is not None:
            kwargs["variant"] = args.variant
        flow(**kwargs)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
