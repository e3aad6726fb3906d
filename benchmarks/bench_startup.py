"""Start-up cost of a stage: one temporary Prefect server per stage process against one shared by the run.

``dvc repro`` runs every stage as a new process. Before: each started its own temporary Prefect API
server (``CXRSYNTH_PREFECT_SERVER=process``) and left through the interpreter's teardown. After (the
default): the stages of a project share one, started by the first and stopped after an idle grace;
the stage's imports run while it starts; a finished stage leaves without the teardown (cli.FinishedRun).

Measured in a scratch project on the tiny profile, with no ``PREFECT_API_URL``:

- a no-op stage: what ``cxrsynth stage`` does (the imports of a stage module, the API, the stale-run
  check, one flow run that loads params, reads dvc.yaml, opens and closes the stage's MLflow run and
  logs a line), split into phases;
- the ``phantom`` stage, a real small one (``cxrsynth stage phantom``).

A run is ``--stages`` stages in a row, as ``dvc repro`` runs them, starting with no server; the two
modes alternate round by round (the machine is noisy). Prints seconds per stage, the ratio, and
the CPU model with its bf16/AMX flags.

    python benchmarks/bench_startup.py            # 3 rounds of 4 no-op and 4 phantom stages per mode
    python benchmarks/bench_startup.py --quick    # 1 round of 2 stages each: a sanity run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# CXRSYNTH_PREFECT_SERVER: before (a server per stage, and the interpreter's teardown at exit), after
MODES = ("process", "shared")
PHASES = ("imports: torch", "imports: prefect", "imports: mlflow", "imports: cxrsynth", "API ready (after imports)",
          "stale flow-run check", "flow-run bookkeeping", "params + dvc.yaml", "MLflow run", "API released",
          "interpreter start + exit")


# ---------------------------------------------------------------------------------------------- the no-op stage (child)


def noop_stage(fast_exit: bool) -> None:
    """What ``cxrsynth stage`` does (cli.main, cli.run_flow), with a clock on each phase; prints the phases as JSON."""
    started = time.perf_counter()
    phases: dict[str, float] = {}
    from cxrsynth.flows.cli import FinishedRun

    finished = FinishedRun() if fast_exit else None

    def timed(name, action):
        begin = time.perf_counter()
        result = action()
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - begin
        return result

    def imports():  # the rest of a stage module's imports, while a shared server starts (as in cli.run_flow)
        timed("imports: prefect", lambda: __import__("cxrsynth.flows.common"))
        timed("imports: torch", lambda: __import__("torch"))
        timed("imports: mlflow", lambda: __import__("mlflow"))
        timed("imports: cxrsynth", lambda: (__import__("cxrsynth.tasks.tracking"), __import__("cxrsynth.tasks.stages")))

    # Prefect's settings are read before any server starts: this part of the imports never overlaps it.
    timed("imports: prefect", lambda: __import__("prefect.settings"))
    from cxrsynth.flows.prefect_api import close_stale_flow_runs, owner_tags, prefect_api

    entering, imported = time.perf_counter(), sum(phases.values())
    api = prefect_api(warm_up=imports)
    api.__enter__()
    phases["API ready (after imports)"] = time.perf_counter() - entering - (sum(phases.values()) - imported)
    timed("stale flow-run check", lambda: close_stale_flow_runs("noop"))

    from prefect import flow

    from cxrsynth.flows.common import setup
    from cxrsynth.tasks import stages, tracking

    @flow(name="noop", log_prints=True)
    def noop_flow(params_path: str = "params.yaml") -> None:
        params, spec = timed("params + dvc.yaml", lambda: (setup(params_path), stages.load().stage_for("phantom")))
        run = timed("MLflow run", lambda: tracking.stage_run(spec, params, run_name="noop"))
        timed("MLflow run", run.__enter__)
        print("the no-op stage logs one line")
        timed("MLflow run", lambda: run.__exit__(None, None, None))

    flow_started = time.perf_counter()
    with owner_tags():
        noop_flow()
    inside = phases["params + dvc.yaml"] + phases["MLflow run"]
    phases["flow-run bookkeeping"] = time.perf_counter() - flow_started - inside
    timed("API released", lambda: api.__exit__(None, None, None))
    phases["in process"] = time.perf_counter() - started
    print("PHASES " + json.dumps(phases), flush=True)
    if finished is not None:
        finished.succeeded = True


# ---------------------------------------------------------------------------------------------- parent


def scratch_project(parent: Path) -> Path:
    """A project folder: the tiny params (MLflow and Prefect's home inside it)."""
    import yaml  # the parent's only third-party import

    project = Path(tempfile.mkdtemp(dir=parent, prefix="project-"))
    params = yaml.safe_load((ROOT / "tests" / "params.tiny.yaml").read_text())
    params["tracking"]["mlflow_uri"] = f"sqlite:///{project / 'mlflow.db'}"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    return project


def environment(project: Path, mode: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "CXRSYNTH_"))}
    env.update(PREFECT_HOME=str(project / "prefect_home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300", MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="1", CXRSYNTH_PREFECT_SERVER=mode, PYTHONPATH=str(ROOT))
    return env


# Before: cli.main called with its arguments, which leaves through the interpreter's teardown as every run did.
BEFORE_CLI = "import sys; from cxrsynth.flows.cli import main; sys.exit(main(sys.argv[1:]))"


def run_stage(kind: str, project: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """One stage process: its wall seconds and, for the no-op stage, its phases."""
    after = env["CXRSYNTH_PREFECT_SERVER"] == "shared"
    if kind == "noop":
        command = [sys.executable, str(Path(__file__).resolve()), "--child", "after" if after else "before"]
    elif after:
        command = [sys.executable, "-m", "cxrsynth.flows.cli", "stage", "phantom"]
    else:
        command = [sys.executable, "-c", BEFORE_CLI, "stage", "phantom"]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{(completed.stdout + completed.stderr)[-4000:]}")
    phases = {}
    for line in completed.stdout.splitlines():
        if line.startswith("PHASES "):
            phases = json.loads(line[len("PHASES "):])
            phases["interpreter start + exit"] = seconds - phases.pop("in process")
    return seconds, phases


def stop_shared_server(project: Path) -> None:
    """End a round with no server, so the next round's first stage starts one as a fresh dvc repro would."""
    from cxrsynth.flows import prefect_server

    state = prefect_server.read_state(prefect_server.state_paths(project))
    if state is None or not prefect_server.runs_server(state.pid):
        return
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while prefect_server.runs_server(state.pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def one_run(kind: str, mode: str, stages: int, workdir: Path) -> tuple[list[float], list[dict[str, float]]]:
    project = scratch_project(workdir)
    env = environment(project, mode)
    try:
        results = [run_stage(kind, project, env) for _ in range(stages)]
    finally:
        stop_shared_server(project)
    return [seconds for seconds, _ in results], [phases for _, phases in results]


def summarise(kind: str, stages: int, walls: dict[str, list[list[float]]]) -> None:
    print(f"\n{kind} stage: seconds per stage (median over rounds), runs of {stages} stages from no server")
    print(f"{'mode':<10}{'first':>9}{'later':>9}{'per stage':>11}")
    per_stage = {}
    for mode in MODES:
        first = statistics.median(run[0] for run in walls[mode])
        later = statistics.median(s for run in walls[mode] for s in run[1:]) if stages > 1 else float("nan")
        per_stage[mode] = statistics.median(sum(run) / len(run) for run in walls[mode])
        print(f"{mode:<10}{first:>9.2f}{later:>9.2f}{per_stage[mode]:>11.2f}")
    print(f"ratio per stage, process / shared: {per_stage['process'] / per_stage['shared']:.2f}x "
          f"(saves {per_stage['process'] - per_stage['shared']:.2f} s a stage)")


def print_phases(phases: dict[str, list[list[dict[str, float]]]]) -> None:
    """Median seconds per phase; the first stage of a run apart (it also creates Prefect's and MLflow's databases)."""
    print("\nno-op stage, where the seconds go (median; the first stage of a run | a later one)")
    columns = {}
    for mode in MODES:
        columns[f"{mode} 1st"] = [run[0] for run in phases[mode]]
        columns[f"{mode} later"] = [row for run in phases[mode] for row in run[1:]]
    print(f"{'phase':<28}" + "".join(f"{name:>15}" for name in columns))
    for phase in (*PHASES, "total"):
        cells = []
        for rows in columns.values():
            values = [sum(row.values()) if phase == "total" else row.get(phase, 0.0) for row in rows]
            cells.append(statistics.median(values) if values else float("nan"))
        print(f"{phase:<28}" + "".join(f"{cell:>15.2f}" for cell in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stages", type=int, default=4, help="stages per run (as dvc repro runs them)")
    parser.add_argument("--kinds", nargs="+", default=["noop", "phantom"], choices=["noop", "phantom"])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 stages: a sanity run")
    parser.add_argument("--child", choices=["before", "after"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        noop_stage(fast_exit=args.child == "after")
        return 0
    if args.quick:
        args.rounds, args.stages = 1, 2
    from cxrsynth.tasks.device import describe_cpu  # here: only the stages this measures import the project

    print(describe_cpu())
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share these CPUs: figures are noisy)")
    workdir = Path(tempfile.mkdtemp(prefix="bench_startup-"))
    try:
        for kind in args.kinds:
            walls = {mode: [] for mode in MODES}
            phases = {mode: [] for mode in MODES}  # per mode: per run, each stage's phases
            for round_index in range(args.rounds):
                order = MODES if round_index % 2 == 0 else MODES[::-1]
                for mode in order:
                    seconds, stage_phases = one_run(kind, mode, args.stages, workdir)
                    walls[mode].append(seconds)
                    print(f"round {round_index + 1} {kind} {mode}: " + " ".join(f"{s:.2f}" for s in seconds), flush=True)
                    phases[mode].append(stage_phases)
            if kind == "noop":
                print_phases(phases)
            summarise(kind, args.stages, walls)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
