"""Torch threads from the usable CPUs and runtime.torch_threads; OpenMP spin-waiting set before torch loads."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from cxrsynth.tasks import threads
from cxrsynth.tasks.classifier.data import seed_worker
from tests.conftest import ROOT, TINY_PARAMS

torch.set_num_threads(1)
CHILD_ENV = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}


@pytest.fixture
def eight_cpus(monkeypatch):
    """This process may use 8 CPUs (whatever the machine has); torch's threads restored afterwards,
    and the inter-op pool size recorded rather than fixed for the whole test session."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    interop: list[int] = []
    monkeypatch.setattr(torch, "set_num_interop_threads", interop.append)
    before = torch.get_num_threads()
    yield interop
    torch.set_num_threads(before)


def test_null_means_every_usable_cpu(eight_cpus):
    setting = threads.set_torch_threads(None)
    assert (setting.threads, setting.usable_cpus, torch.get_num_threads(), eight_cpus) == (8, 8, 8, [8])


def test_runtime_torch_threads_is_honoured(eight_cpus):
    setting = threads.set_torch_threads(3)
    assert (setting.threads, setting.requested, torch.get_num_threads(), eight_cpus) == (3, 3, 3, [3])
    assert "3 requested" in setting.describe() and "8 usable CPUs" in setting.describe()


def test_more_threads_than_usable_cpus_are_capped_with_a_warning(eight_cpus, caplog):
    with caplog.at_level(logging.WARNING, logger=threads.__name__):
        setting = threads.set_torch_threads(16)
    assert setting.threads == 8 and torch.get_num_threads() == 8
    assert "16 torch threads requested" in caplog.text and "using 8 threads" in caplog.text


def test_omp_num_threads_stands_in_for_a_null_setting(eight_cpus, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a user's choice, or torchrun's for several processes
    assert threads.set_torch_threads(None).threads == 2
    assert threads.set_torch_threads(5).threads == 5  # runtime.torch_threads wins
    monkeypatch.setenv("OMP_NUM_THREADS", "2,1")  # nested levels: not one count, ignored
    assert threads.set_torch_threads(None).threads == 8


def test_tasks_sharing_the_cpus_get_a_share_each(caplog):
    assert threads.thread_count(None, usable=8, sharing=3) == 2
    assert threads.thread_count(None, usable=2, sharing=4) == 1  # never fewer than one
    assert threads.thread_count(1, usable=8, sharing=2) == 1
    with caplog.at_level(logging.WARNING, logger=threads.__name__):
        assert threads.thread_count(4, usable=8, sharing=4) == 2
    assert "shared by 4 tasks" in caplog.text


AFFINITY_CHILD = """
import json, os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # like taskset -c or a cgroup cpuset
import torch
from cxrsynth.tasks import threads
setting = threads.set_torch_threads(json.loads(sys.argv[1]))
print(json.dumps([setting.threads, setting.usable_cpus, torch.get_num_threads()]))
"""


@pytest.mark.parametrize("requested", [None, 2])
def test_the_affinity_mask_bounds_the_threads(requested):
    """A process limited to one CPU runs one thread, asked for all or for more."""
    child = subprocess.run([sys.executable, "-c", AFFINITY_CHILD, json.dumps(requested)], env=CHILD_ENV,
                           cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(child.stdout) == [1, 1, 1]
    assert ("using 1 threads" in child.stderr) == (requested == 2)


def test_wait_policy_names_what_the_environment_holds():
    assert threads.wait_policy({}) == "default"
    assert threads.wait_policy({"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "5"}) == "OMP_WAIT_POLICY=PASSIVE,GOMP_SPINCOUNT=5"


# The stage entry point, up to the stage itself: records what the environment held and whether torch
# was loaded when the stage began; then loads torch, whose libgomp prints its settings (OMP_DISPLAY_ENV).
CLI_CHILD = """
import json, os, sys
from cxrsynth.flows import cli

def stage(target, flow_name, **kwargs):
    torch_loaded = "torch" in sys.modules
    import torch
    print(json.dumps({"torch_loaded": torch_loaded, "flow": flow_name,
                      "environ": {k: v for k, v in os.environ.items() if k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}))

cli.run_flow = stage
cli.main(["stage", "train_diffusion"])
"""


@pytest.mark.parametrize("users, environ, spincount", [
    ({}, {}, "300000"),  # libgomp's own default: cxrsynth leaves spin-waiting alone (tasks/threads.py says why)
    ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}, "0"),
    ({"GOMP_SPINCOUNT": "5000"}, {"GOMP_SPINCOUNT": "5000"}, "5000"),
])
def test_stage_command_passes_the_users_spin_waiting_to_libgomp(users, environ, spincount):
    child = subprocess.run([sys.executable, "-c", CLI_CHILD], env={**CHILD_ENV, **users, "OMP_DISPLAY_ENV": "VERBOSE"},
                           cwd=ROOT, capture_output=True, text=True, check=True)
    record = json.loads(child.stdout.strip().splitlines()[-1])
    assert record == {"torch_loaded": False, "flow": "train_diffusion", "environ": environ}
    # what libgomp itself took when torch loaded it
    assert re.search(r"GOMP_SPINCOUNT = '(\d+)'", child.stderr).group(1) == spincount, child.stderr


class ThreadsInWorker(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return torch.get_num_threads()


def test_loader_workers_run_one_thread_each():
    torch.set_num_threads(2)
    try:
        loader = DataLoader(ThreadsInWorker(), batch_size=1, num_workers=2, worker_init_fn=seed_worker)
        assert [int(batch) for batch in loader] == [1, 1]
    finally:
        torch.set_num_threads(1)


def test_a_mapped_task_takes_its_share_where_it_runs(eight_cpus):
    distributed = pytest.importorskip("distributed")
    request = threads.ThreadRequest(torch_threads=None, tasks_at_once=4)
    assert threads.dask_worker_tasks() is None  # not in a worker: the tasks at once are threads of this process
    assert (request.apply().threads, torch.get_num_threads()) == (2, 2)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=3, dashboard_address=None) as client:
        assert client.submit(threads.dask_worker_tasks).result() == 3
        in_worker = client.submit(request.apply).result()  # the worker's 3 threads share its CPUs
    assert (in_worker.sharing, in_worker.threads) == (3, 2)


def test_logged_params_are_the_setting_in_effect(no_governor):
    assert threads.logged_params() == {"runtime.threads": torch.get_num_threads(),
                                       "runtime.usable_cpus": len(os.sched_getaffinity(0)),
                                       "runtime.omp_wait_policy": threads.wait_policy(),
                                       "runtime.adaptive_threads": False}


# ------------------------------------------------------------------------------ adaptive thread count


@pytest.fixture
def no_governor(monkeypatch):
    """The process's governor is whatever a test installs, and none afterwards."""
    monkeypatch.setattr(threads, "_governor", None)


class Machine:
    """Synthetic CPU-time readings: wall clock, busy seconds of the usable CPUs, this process's seconds."""

    def __init__(self):
        self.wall, self.busy, self.own, self.reads = 0.0, 0.0, 0.0, 0
        self.set_to: list[int] = []
        self.said: list[str] = []

    def run(self, seconds: float, own_cpus: float, other_cpus: float) -> None:
        self.wall += seconds
        self.own += own_cpus * seconds
        self.busy += (own_cpus + other_cpus) * seconds

    def machine_busy(self) -> float:
        self.reads += 1
        return self.busy

    def governor(self, ceiling: int, interval_s: float = 2.0) -> threads.ThreadGovernor:
        return threads.ThreadGovernor(ceiling, interval_s, clock=lambda: self.wall, machine_busy=self.machine_busy,
                                      own_busy=lambda: self.own, set_threads=self.set_to.append, report=self.said.append)


def test_a_busy_process_takes_a_thread_and_gives_it_back_when_it_stops():
    machine = Machine()
    governor = machine.governor(ceiling=2)
    machine.run(2.0, own_cpus=2.0, other_cpus=0.0)  # alone
    assert governor.tick() == 2
    machine.run(2.0, own_cpus=1.3, other_cpus=0.7)  # another process shares the cores
    assert governor.tick() == 1
    machine.run(2.0, own_cpus=1.0, other_cpus=1.0)  # one CPU each: the other process still runs
    assert governor.tick() == 1
    machine.run(2.0, own_cpus=1.0, other_cpus=0.0)  # it stopped
    assert governor.tick() == 2
    assert machine.set_to == [1, 2]
    assert machine.said == ["threads 2 -> 1: other processes busy on 0.7 CPU",
                            "threads 1 -> 2: other processes busy on 0.0 CPU"]


def test_readings_wait_for_the_interval():
    machine = Machine()
    governor = machine.governor(ceiling=2, interval_s=5.0)
    for _ in range(4):  # short steps beside a busy process: no reading until 5 s have passed
        machine.run(1.0, own_cpus=1.0, other_cpus=1.0)
        assert governor.tick() == 2
    assert machine.reads == 1  # the first reading, when the governor started
    machine.run(1.0, own_cpus=1.0, other_cpus=1.0)
    assert governor.tick() == 1 and machine.reads == 2


@pytest.mark.parametrize("threads_now, others, expected", [
    (2, 0.55, 2),  # under the drop threshold: keep both
    (2, 0.65, 1),
    (1, 0.45, 1),  # between the thresholds: keep the one
    (1, 0.25, 2),
    (8, 2.7, 5),  # several CPUs busy elsewhere: a thread fewer for each
    (5, 2.5, 5),  # near the current share: no change either way
    (5, 1.2, 7),
    (8, 0.0, 8),  # never above the ceiling
    (8, 20.0, 1),  # never below one thread
])
def test_threads_follow_the_others_with_hysteresis(threads_now, others, expected):
    ceiling = 8 if threads_now > 2 else 2
    assert threads.threads_to_run(ceiling, threads_now, others) == expected


def test_the_ceiling_bounds_the_count():
    """runtime.torch_threads or OMP_NUM_THREADS set the ceiling: a quiet machine adds no thread beyond it."""
    machine = Machine()
    governor = machine.governor(ceiling=1)
    for other_cpus in (0.0, 1.0, 0.0):
        machine.run(2.0, own_cpus=1.0, other_cpus=other_cpus)
        assert governor.tick() == 1
    assert machine.set_to == [] and machine.said == []


def test_unreadable_cpu_times_leave_the_threads_alone():
    machine = Machine()

    def unreadable() -> float:
        raise OSError("[Errno 2] No such file or directory: '/proc/stat'")

    governor = threads.ThreadGovernor(2, clock=lambda: machine.wall, machine_busy=unreadable,
                                      set_threads=machine.set_to.append, report=machine.said.append)
    for _ in range(3):
        machine.run(5.0, own_cpus=1.0, other_cpus=1.0)
        assert governor.tick() == 2
    assert not governor.active and machine.set_to == []
    assert len(machine.said) == 1 and "adaptive threads off" in machine.said[0] and "/proc/stat" in machine.said[0]


def test_without_proc_stat_the_default_governor_says_so_once(monkeypatch, tmp_path):
    monkeypatch.setattr(threads, "PROC_STAT", tmp_path / "no_proc_stat")  # as on macOS or Windows
    said: list[str] = []
    governor = threads.ThreadGovernor(2, interval_s=0.0, report=said.append)
    assert governor.tick() == 2 and not governor.active and len(said) == 1


STAT = """cpu  900 90 90 9000 9 0 9 9 0 0
cpu0 100 10 20 1000 5 1 2 3 0 0
cpu1 400 40 40 4000 4 0 4 4 0 0
intr 1 2 3
"""


def test_busy_time_counts_the_usable_cpus_only():
    tick = os.sysconf("SC_CLK_TCK")
    assert threads.busy_cpu_seconds({0}, STAT) == pytest.approx((100 + 10 + 20 + 1 + 2 + 3) / tick)  # not idle, iowait
    assert threads.busy_cpu_seconds({0, 1}, STAT) == pytest.approx((136 + 488) / tick)
    with pytest.raises(OSError, match="none of CPUs"):
        threads.busy_cpu_seconds({7}, STAT)


@pytest.mark.skipif(not threads.PROC_STAT.exists(), reason="no /proc/stat (not Linux)")
def test_this_machines_cpu_times_are_read():
    cpus = os.sched_getaffinity(0)
    busy, own = threads.busy_cpu_seconds(cpus), threads.own_cpu_seconds()
    spin_until = own + 0.2
    while threads.own_cpu_seconds() < spin_until:  # some CPU time of our own
        pass
    busy_delta, own_delta = threads.busy_cpu_seconds(cpus) - busy, threads.own_cpu_seconds() - own
    assert busy_delta >= own_delta - 0.05 * len(cpus)  # the machine's busy time holds ours (clock-tick rounding)
    governor = threads.ThreadGovernor(1, interval_s=0.0, set_threads=pytest.fail)
    assert governor.tick() == 1 and governor.active


def test_the_stage_set_up_installs_the_governor_from_params(no_governor, tmp_path, monkeypatch):
    from cxrsynth.flows import common

    raw = yaml.safe_load(TINY_PARAMS.read_text())
    path = tmp_path / "params.yaml"
    for adaptive, device, expected in [(False, "cpu", False), (True, "cuda", False), (True, "cpu", True)]:
        raw["runtime"].update(adaptive_threads=adaptive, device=device, torch_threads=1)
        path.write_text(yaml.safe_dump(raw))
        common.setup(str(path))
        assert threads.adaptive() == expected
        assert threads.logged_params()["runtime.adaptive_threads"] == expected
    assert threads._governor.ceiling == 1  # runtime.torch_threads: the governor never goes above it
    calls: list[int] = []
    monkeypatch.setattr(threads._governor, "tick", lambda: calls.append(1))
    threads.tick()
    assert calls == [1]
    threads.govern(None)
    threads.tick()  # no governor: nothing happens
    assert calls == [1] and not threads.adaptive()


def test_a_task_governs_its_own_share(eight_cpus):
    """Sampling parts on threads of one process: each loop adapts its own thread's count, below its share."""
    request = threads.ThreadRequest(tasks_at_once=4, adaptive=True)
    setting = request.apply()
    assert request.step_hook(setting).__self__.ceiling == setting.threads == 2
    fixed = threads.ThreadRequest(tasks_at_once=4).step_hook(setting)
    fixed()
    assert not isinstance(getattr(fixed, "__self__", None), threads.ThreadGovernor) and torch.get_num_threads() == 2


def test_runs_on_cpu_follows_runtime_device():
    from cxrsynth.flows.common import runs_on_cpu

    assert runs_on_cpu("cpu") and not runs_on_cpu("cuda")
    assert runs_on_cpu("auto") == (not torch.cuda.is_available())
