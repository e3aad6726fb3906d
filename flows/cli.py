"""The ``cxrsynth`` command: run one stage, the whole pipeline, or serve it on a schedule."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading

# stage name -> "module:flow function"; imported only when used, so --help is instant.
STAGES: dict[str, str] = {
    "phantom": "cxrsynth.flows.phantom:phantom_flow",
    "ingest": "cxrsynth.flows.ingest:ingest_flow",
    "parse_reports": "cxrsynth.flows.parse_reports:parse_reports_flow",
    "prepare_masks": "cxrsynth.flows.prepare_masks:prepare_masks_flow",
    "train_autoencoder": "cxrsynth.flows.train_autoencoder:train_autoencoder_flow",
    "train_diffusion": "cxrsynth.flows.train_diffusion:train_diffusion_stage",
    "generate": "cxrsynth.flows.generate:generate_flow",
    "mix": "cxrsynth.flows.mix:mix_flow",
    "train_classifier": "cxrsynth.flows.train_classifier:train_classifier_flow",
    "evaluate": "cxrsynth.flows.evaluate:evaluate_flow",
}
PIPELINE = "cxrsynth.flows.pipeline:pipeline_flow"
SIGTERM_GRACE_S = 15.0  # how long `serve` waits for its runner's graceful stop after SIGTERM


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

    pipeline = commands.add_parser("pipeline", help="run the whole DAG as one Prefect flow, stage by stage through DVC")
    pipeline.add_argument("--params", default="params.yaml")
    pipeline.add_argument("--stages", nargs="*", default=None, help="only these stages (DVC names, e.g. mix@0.5)")

    serve = commands.add_parser("serve", help="serve the pipeline as a scheduled Prefect deployment (blocks)")
    serve.add_argument("--name", default="cxrsynth-pipeline", help="deployment name")
    serve.add_argument("--cron", default="0 2 * * *", help="cron schedule (default: every night at 02:00)")
    serve.add_argument("--timezone", default="UTC")
    serve.add_argument("--params", default="params.yaml")
    return parser


def _pipeline_tags():
    """Inside a pipeline run, tag each stage's flow run with it (visible and filterable in the UI)."""
    from cxrsynth.tasks.tracking import PIPELINE_RUN_ENV

    pipeline_run = os.environ.get(PIPELINE_RUN_ENV)
    if not pipeline_run:
        return contextlib.nullcontext()
    from prefect import tags

    return tags(f"pipeline:{pipeline_run}")


def deployment(name: str, cron: str, timezone: str = "UTC", params_path: str = "params.yaml"):
    """The pipeline's scheduled deployment (what ``serve`` runs and a test loads)."""
    from prefect.schedules import Cron

    return load_flow(PIPELINE).to_deployment(
        name=name, schedule=Cron(cron, timezone=timezone), parameters={"params_path": params_path},
        concurrency_limit=1,  # two DVC runs in one repository would fight over its lock
        description="cxrsynth: dvc repro of the whole DAG, stage by stage, on a schedule.",
        _sync=True,  # Prefect would hand back a coroutine wherever an event loop happens to run in this thread
    )


def run_flow(target: str, flow_name: str, **kwargs) -> None:
    """Run one flow (``flow_name``, also what a stage's wrapper runs) under a Prefect API (the configured one,
    else a temporary server that does not outlive the run for long), after closing the runs a killed one left."""
    from cxrsynth.flows.prefect_api import close_stale_flow_runs, owner_tags, prefect_api

    with prefect_api(warm_up=lambda: load_flow(target)):  # the flow's imports overlap a server's start-up
        for run_id in close_stale_flow_runs(flow_name):
            print(f"flow run {run_id} of {flow_name} was left running by a process that is gone: marked Crashed")
        with _pipeline_tags(), owner_tags():
            load_flow(target)(**kwargs)


def exit_on_sigterm(grace_seconds: float = SIGTERM_GRACE_S) -> None:
    """Make a served runner leave on SIGTERM within ``grace_seconds``, even when its graceful stop hangs.

    Prefect's runner installs its own SIGTERM handler, which pauses the schedules through the API
    and waits for that; with the API gone it waits for ever. Its handler is wrapped, not replaced:
    the graceful stop still runs, with a deadline.
    """
    from prefect.runner import Runner

    graceful = Runner.handle_sigterm

    def handle_sigterm(self, *args, **kwargs) -> None:
        deadline = threading.Timer(grace_seconds, os._exit, args=(128 + signal.SIGTERM,))
        deadline.daemon = True
        deadline.start()
        graceful(self, *args, **kwargs)

    Runner.handle_sigterm = handle_sigterm


class FinishedRun:
    """Ends a command-line run that succeeded without tearing down the interpreter (``os._exit``).

    Tearing down a process that loaded torch, MONAI, MLflow and Prefect took 2 to 5 s after every
    stage had finished its work (``dvc repro`` waits for it; a run has a dozen stages). The hook is
    registered before those imports, so it runs after every exit hook they register (atexit runs
    the last registered first) and after Python has joined its threads (Prefect sends its queued
    logs from there); it flushes logging and the standard streams, then leaves with status 0. A
    failed run leaves the normal way, with its status and traceback.
    """

    def __init__(self) -> None:
        self.succeeded = False
        atexit.register(self.leave)

    def leave(self) -> None:
        if not self.succeeded:
            return
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """The ``cxrsynth`` command. Run as a program (``argv`` None: the command line), a finished ``stage`` or
    ``pipeline`` leaves without the interpreter's teardown (``FinishedRun``)."""
    args = build_parser().parse_args(argv)
    finished = FinishedRun() if argv is None and args.command in ("stage", "pipeline") else None
    if args.command == "stage":
        kwargs = {"params_path": args.params}
        if args.variant is not None:
            kwargs["variant"] = args.variant
        run_flow(STAGES[args.name], args.name, **kwargs)  # every stage's flow is named after it
    elif args.command == "pipeline":
        run_flow(PIPELINE, "pipeline", params_path=args.params, stages=args.stages)
    elif args.command == "serve":
        from prefect import serve

        exit_on_sigterm()
        serve(deployment(args.name, args.cron, args.timezone, args.params))
    if finished is not None:
        finished.succeeded = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
