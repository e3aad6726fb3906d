"""Torch threads and OpenMP spin-waiting on a shared machine: a diffusion training step alone and beside
one busy process, for each setting, side by side in one run.

The step is the bare MONAI U-Net training loop of ``bench_diffusion.py`` (``bare_loop``) at the default
profile's shapes (channels 32/64/128, batch 16, 64 px, 8 input channels, cross-attention context).
Each measurement runs in its own child process, because libgomp reads ``OMP_WAIT_POLICY`` and
``GOMP_SPINCOUNT`` only when ``import torch`` loads it. "Busy" is a second child spinning a Python loop
on any CPU (no affinity), like a user's other program or a second stage. Rounds alternate the order
of the settings and of alone / busy, so a change in the machine's load hits all alike. Each phase starts
with ``--settle`` untimed steps after the busy process starts or stops, for every setting: the steady
state is what a long training run sees, and ``adaptive`` (``runtime.adaptive_threads``: all usable
threads, and ``tasks/threads.py``'s governor ticked after every step) needs a step or two to notice.

Printed per setting: step time alone, step time beside the busy process, the slowdown (busy / alone,
median of per-round ratios), the time beside the busy process against torch's default alone (busy /
default alone), the cost alone against torch's default (alone / default alone), how often the process's
threads went to sleep per step alone (voluntary context switches: an OpenMP thread that stops spinning
sleeps, and waking it costs time: where a setting's cost alone comes from), and the torch threads at the
end of each phase. Targets (issue 12): busy <= 2.2x torch's default alone on 2 cores; alone <= 1.05x the
default. ``*`` marks the setting the ``cxrsynth`` command applies (``tasks/threads.py``).

Run from the repository root:  python benchmarks/bench_threads.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrsynth.tasks import threads  # noqa: E402  (imports no torch)

# name -> (environment added to the child, torch threads: None = all usable CPUs, "torch" = torch's own default,
# "adaptive" = all usable CPUs under the thread governor, as stages run with runtime.adaptive_threads)
SETTINGS: dict[str, tuple[dict[str, str], int | str | None]] = {
    "default": ({}, "torch"),
    "passive": ({threads.WAIT_POLICY_ENV: "PASSIVE"}, None),
    "spin_1000": ({threads.SPINCOUNT_ENV: "1000"}, None),
    "spin_10000": ({threads.SPINCOUNT_ENV: "10000"}, None),
    "spin_30000": ({threads.SPINCOUNT_ENV: "30000"}, None),
    "spin_100000": ({threads.SPINCOUNT_ENV: "100000"}, None),
    "one_thread": ({}, 1),
    "adaptive": ({}, "adaptive"),
}
OMP_VARIABLES = (threads.WAIT_POLICY_ENV, threads.SPINCOUNT_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def chosen_setting() -> str:
    """The setting stages run under unless the user sets OMP_WAIT_POLICY / GOMP_SPINCOUNT or turns
    runtime.adaptive_threads off (tasks/threads.py)."""
    return "adaptive"


# ----------------------------------------------------------------------------------------- child side


@contextlib.contextmanager
def busy_process(busy: bool):
    """A second process spinning a Python loop on any CPU while the block runs (when ``busy``)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def voluntary_switches() -> int:
    """How many times this process's threads went to sleep so far (an OpenMP thread that stops spinning
    sleeps on a futex: one voluntary context switch)."""
    total = 0
    for thread in Path("/proc/self/task").iterdir():
        for line in (thread / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                total += int(line.split()[1])
    return total


def child_step_seconds(count: int | str | None, batch: int, steps: int, settle: int, phases: list[str]
                       ) -> dict[str, float]:
    """Seconds per training step (steady state) of the default-profile U-Net in this process, alone and
    beside a busy process, in the order of ``phases``; the thread sleeps per step alone; the torch
    threads at the end of each phase."""
    import torch

    torch_default = torch.get_num_threads()
    from benchmarks.bench_diffusion import bare_loop, default_params  # noqa: PLC0415  (sets 1 thread on import)
    from cxrsynth.tasks.diffusion.model_io import model_config
    from cxrsynth.tasks.diffusion.tokenizer import WordTokenizer
    from cxrsynth.tasks.findings import FINDINGS

    if count == "torch":
        torch.set_num_threads(torch_default)
    elif count == "adaptive":
        threads.govern(threads.set_torch_threads(None).threads)
    else:
        threads.set_torch_threads(count)
    params = default_params()
    text = params.diffusion.text_encoder
    tokenizer = WordTokenizer.build([], text.min_word_count, text.max_tokens)
    config = model_config(params.diffusion, params.ingest.image_size, tokenizer, maskable=[])
    tokens = 1 + len(FINDINGS) + text.max_tokens
    bare_loop(config, batch, 2, tokens, on_step=threads.tick)  # warm-up: allocator, oneDNN primitives
    seconds = {}
    for phase in phases:
        with busy_process(phase == "busy"):
            slept = voluntary_switches()
            seconds[phase] = batch / bare_loop(config, batch, settle + steps, tokens, untimed=settle + 1,
                                               on_step=threads.tick)  # no governor: tick does nothing
            if phase == "alone":
                seconds["sleeps"] = (voluntary_switches() - slept) / (settle + steps)
            seconds[f"{phase}_threads"] = torch.get_num_threads()
    return seconds


# ---------------------------------------------------------------------------------------- parent side


def measure(name: str, phases: list[str], args) -> dict[str, float]:
    """One child process under setting ``name``: seconds per step for each of ``phases`` (alone, busy)."""
    env_added, count = SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARIABLES}
    env.update(env_added, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(count), "--phases", *phases,
                          "--batch", str(args.batch), "--steps", str(args.steps), "--settle", str(args.settle)],
                         env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"setting {name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_rounds(names: list[str], args) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {
        name: {"alone": [], "busy": [], "sleeps": [], "alone_threads": [], "busy_threads": []} for name in names}
    for round_index in range(args.rounds):
        forward = round_index % 2 == 0
        phases = ["alone", "busy"] if forward else ["busy", "alone"]
        for name in names if forward else names[::-1]:
            for phase, seconds in measure(name, phases, args).items():
                times[name][phase].append(seconds)
            print(f"  round {round_index}: {name:12s} alone {times[name]['alone'][-1]:.2f} s/step "
                  f"({times[name]['alone_threads'][-1]:.0f} threads), busy {times[name]['busy'][-1]:.2f} s/step "
                  f"({times[name]['busy_threads'][-1]:.0f} threads)", file=sys.stderr, flush=True)
    return times


def summary(times: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    default_alone = times["default"]["alone"]
    return {name: {
        "alone_s": statistics.median(t["alone"]),
        "busy_s": statistics.median(t["busy"]),
        "slowdown": statistics.median(b / a for a, b in zip(t["alone"], t["busy"], strict=True)),
        "busy_vs_default_alone": statistics.median(b / d for b, d in zip(t["busy"], default_alone, strict=True)),
        "alone_vs_default": statistics.median(a / d for a, d in zip(t["alone"], default_alone, strict=True)),
        "sleeps_per_step": statistics.median(t["sleeps"]),
        "alone_threads": statistics.median(t["alone_threads"]),
        "busy_threads": statistics.median(t["busy_threads"]),
    } for name, t in times.items()}


def print_table(results: dict[str, dict[str, float]], args) -> None:
    chosen = chosen_setting()
    from cxrsynth.tasks.device import describe_cpu  # here: the parent process otherwise never loads torch

    print(f"CPU: {describe_cpu()}")
    print(f"bare U-Net training step, batch {args.batch}, {args.settle} settling + {args.steps - 1} timed steps "
          f"x {args.rounds} rounds (medians; ratios are medians of per-round ratios)")
    print(f"{'setting':14s} {'alone s/step':>12s} {'busy s/step':>12s} {'slowdown':>9s} {'busy/def.alone':>15s} "
          f"{'alone/default':>14s} {'sleeps/step':>12s} {'threads alone/busy':>19s}")
    for name, r in results.items():
        mark = "*" if name == chosen else " "
        print(f"{mark}{name:13s} {r['alone_s']:12.2f} {r['busy_s']:12.2f} {r['slowdown']:8.2f}x "
              f"{r['busy_vs_default_alone']:14.2f}x {r['alone_vs_default']:13.3f}x {r['sleeps_per_step']:12.0f} "
              f"{r['alone_threads']:>11.0f} / {r['busy_threads']:<5.0f}")
    if chosen in results:
        r = results[chosen]
        print(f"chosen ({chosen}, {threads.wait_policy(dict(SETTINGS[chosen][0]))}): beside one busy process "
              f"{r['busy_vs_default_alone']:.2f}x torch's default alone (target <= 2.2x; own slowdown "
              f"{r['slowdown']:.2f}x), alone {r['alone_vs_default']:.3f}x torch's default (target <= 1.05x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="training steps per measurement (the first is not timed)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--settle", type=int, default=2,
                        help="untimed steps at the start of each phase, for every setting (the governor adapts)")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--quick", action="store_true", help="sanity run: 1 round, 3 steps, batch 4, 1 settling step")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--phases", nargs="*", default=["alone", "busy"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child_step_seconds(json.loads(args.child), args.batch, args.steps, args.settle, args.phases)))
        return
    if args.quick:
        args.rounds, args.steps, args.batch, args.settle = 1, 3, 4, 1
    names = ["default", *[name for name in args.settings if name != "default"]]  # the baseline of every ratio
    results = summary(run_rounds(names, args))
    print_table(results, args)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
