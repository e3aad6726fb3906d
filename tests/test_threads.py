"""Torch threads from the usable CPUs and runtime.torch_threads; OpenMP spin-waiting set before torch loads."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from cxrsynth.tasks import threads
from cxrsynth.tasks.classifier.data import seed_worker
from tests.conftest import ROOT

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


def test_logged_params_are_the_setting_in_effect():
    assert threads.logged_params() == {"runtime.threads": torch.get_num_threads(),
                                       "runtime.usable_cpus": len(os.sched_getaffinity(0)),
                                       "runtime.omp_wait_policy": threads.wait_policy()}
