"""Data-parallel diffusion training: sharding, and two Gloo processes on CPU training like one."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from cxrsynth.tasks.diffusion.data import StepBatches
from cxrsynth.tasks.diffusion.distributed import Replica, check_batch, replica_from_env, torchrun_command
from cxrsynth.tasks.diffusion.training import draw_step, train_diffusion
from tests.diffusion_data import tiny_diffusion, tiny_setup

# Lesion terms are normalised per shard (close, not exact): off, so the match can be exact.
PLAIN_LOSS = {"loss": {"lesion_weight": 0.0, "ssim_weight": 0.0}}


def _diffusion(steps: int = 3):
    params = tiny_diffusion(steps=steps, batch_size=4, checkpoint_every=steps)
    return params.model_validate({**params.model_dump(), **PLAIN_LOSS})


def test_step_batches_split_each_global_batch_across_processes():
    whole = list(StepBatches(10, 4, seed=1, start=0, stop=5))
    shards = [list(StepBatches(10, 4, seed=1, start=0, stop=5, rank=r, world_size=2)) for r in (0, 1)]
    for step, batch in enumerate(whole):
        assert shards[0][step] == batch[0::2] and shards[1][step] == batch[1::2]


def test_step_draws_keep_the_rows_of_this_process():
    draws = draw_step(4, torch.Size([1, 8, 8]), _diffusion(), 50, torch.Generator().manual_seed(0))
    second = draws.rows(Replica(rank=1, world_size=2))
    assert torch.equal(second.noise, draws.noise[[1, 3]]) and torch.equal(second.timesteps, draws.timesteps[[1, 3]])
    assert all(torch.equal(second.keep[name], draws.keep[name][[1, 3]]) for name in draws.keep)


def test_batch_size_must_divide_among_processes():
    check_batch(16, Replica(rank=0, world_size=4))
    with pytest.raises(ValueError, match="diffusion.train.batch_size 6 .* 4 training processes"):
        check_batch(6, Replica(rank=0, world_size=4))


def test_replica_from_torchrun_environment(monkeypatch):
    assert replica_from_env() == Replica()
    monkeypatch.setenv("RANK", "3"), monkeypatch.setenv("WORLD_SIZE", "4"), monkeypatch.setenv("LOCAL_RANK", "1")
    replica = replica_from_env()
    assert replica == Replica(3, 4, 1) and not replica.is_main
    assert replica.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert replica.device(torch.device("cpu")) == torch.device("cpu")


def test_torchrun_command_reruns_the_stage_on_this_node():
    command = torchrun_command(4, ["stage", "train_diffusion", "--params", "p.yaml"])
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert command[6:] == ["cxrsynth.flows.cli", "stage", "train_diffusion", "--params", "p.yaml"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _replica_trains(rank: int, world_size: int, port: int, root: str) -> None:
    """One spawned process: the same toy data and model as every other, its share of each batch."""
    import torch.distributed as dist

    from cxrsynth.tasks.diffusion.distributed import process_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    replica = Replica(rank, world_size, rank)
    _, prepared = tiny_setup(f"{root}/data_{rank}", _diffusion())
    with process_group(replica, torch.device("cpu")):
        assert dist.get_world_size() == world_size
        outcome = train_diffusion(prepared, _diffusion(), f"{root}/checkpoints", seed=0, replica=replica)
    torch.save({"weights": _weights(prepared.model), "history": outcome.history}, f"{root}/rank_{rank}.pt")


@pytest.mark.slow
def test_two_processes_take_the_steps_one_process_takes_on_the_whole_batch(tmp_path):
    _, single = tiny_setup(tmp_path / "single", _diffusion())
    reference = train_diffusion(single, _diffusion(), tmp_path / "single/checkpoints", seed=0)

    mp.spawn(_replica_trains, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank_{r}.pt") for r in (0, 1)]
    torch.testing.assert_close(ranks[0]["weights"], ranks[1]["weights"], rtol=0, atol=0)  # replicas stay in sync
    torch.testing.assert_close(ranks[0]["weights"], _weights(single.model), rtol=1e-4, atol=1e-5)
    assert [step for step, _ in ranks[0]["history"]] == [1, 2, 3]
    losses = torch.tensor([loss for _, loss in ranks[0]["history"]])
    torch.testing.assert_close(losses, torch.tensor([loss for _, loss in reference.history]), rtol=1e-4, atol=1e-5)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000003.pt"]  # rank 0 wrote it


@pytest.mark.slow
def test_stage_with_two_processes_runs_itself_under_torchrun(tmp_path, diffusion_project):
    import json
    import subprocess
    import sys

    import mlflow

    diffusion_project(diffusion={"train": {"processes": 2, "steps": 4, "checkpoint_every": 2, "sample_every": 4}})
    done = subprocess.run([sys.executable, "-m", "cxrsynth.flows.cli", "stage", "train_diffusion"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "metrics/train_diffusion.json").read_text())["steps"] == 4
    assert (tmp_path / "data/train_diffusion/model/model.pt").exists()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cxrsynth"], output_format="list")
    assert len(runs) == 1  # rank 0 alone tracks


def _control_diffusion():
    plain = _diffusion(steps=2)
    return plain.model_copy(update={"mask_control": "controlnet",
                                    "controlnet": plain.controlnet.model_copy(update={"steps": 2})})


def _control_replica_trains(rank: int, world_size: int, port: int, root: str) -> None:
    """One spawned process of ControlNet training: the base's steps, then the branch's on the frozen base."""
    from cxrsynth.tasks.diffusion.controlnet import train_with_control
    from cxrsynth.tasks.diffusion.distributed import process_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    replica = Replica(rank, world_size, rank)
    _, prepared = tiny_setup(f"{root}/data_{rank}", _control_diffusion())
    with process_group(replica, torch.device("cpu")):
        outcome = train_with_control(prepared, _control_diffusion(), f"{root}/checkpoints", seed=0, replica=replica)
    torch.save({"weights": _weights(outcome.ema_model), "history": outcome.history}, f"{root}/rank_{rank}.pt")


@pytest.mark.slow
def test_controlnet_training_in_two_processes_matches_one(tmp_path):
    """Frozen base weights and a branch that runs on every step keep DDP's gradient buckets whole."""
    from cxrsynth.tasks.diffusion.controlnet import train_with_control

    _, single = tiny_setup(tmp_path / "single", _control_diffusion())
    reference = train_with_control(single, _control_diffusion(), tmp_path / "single/checkpoints", seed=0)
    mp.spawn(_control_replica_trains, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank_{r}.pt") for r in (0, 1)]
    torch.testing.assert_close(ranks[0]["weights"], ranks[1]["weights"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["weights"], _weights(reference.ema_model), rtol=1e-4, atol=1e-5)
    assert [step for step, _ in ranks[0]["history"]] == [1, 2, 3, 4]
