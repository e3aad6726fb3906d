"""Data-parallel diffusion training over several processes (one per GPU), launched by torchrun.

Each step's global batch (``diffusion.train.batch_size`` images) is split across the processes by
position (rank r takes rows r, r + N, ...). The step's randomness (timesteps, noise, condition
dropout) is drawn for the whole global batch from one generator that every process seeds alike, and
each process keeps its rows, so N processes take the optimisation steps one process would take on
the whole batch: DDP averages the shard gradients, which is the gradient of the global mean loss.
(The lesion terms are normalised by each shard's lesion area, so with them on the match is close
rather than exact.) Checkpoints, the model and every log come from rank 0.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun in every process it starts


@dataclass(frozen=True)
class Replica:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def rows(self, items: list[int]) -> list[int]:
        """This process's share of a global batch."""
        return items[self.rank::self.world_size]

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process on a node: CUDA device ``local_rank``."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.distributed else device


def replica_from_env() -> Replica:
    """The replica torchrun describes in the environment; a single process otherwise."""
    return Replica(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def under_torchrun() -> bool:
    return TORCHRUN_ENV in os.environ


def torchrun_command(processes: int, cli_args: list[str]) -> list[str]:
    """The command that re-runs ``cxrsynth <cli_args>`` as ``processes`` torchrun workers on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "cxrsynth.flows.cli", *cli_args]


def check_batch(batch_size: int, replica: Replica) -> None:
    if batch_size % replica.world_size:
        raise ValueError(f"diffusion.train.batch_size {batch_size} must be a multiple of the "
                         f"{replica.world_size} training processes (diffusion.train.processes)")


@contextlib.contextmanager
def process_group(replica: Replica, device: torch.device) -> Iterator[None]:
    """The process group of a distributed run (NCCL on GPUs, Gloo on CPUs); nothing for one process."""
    if not replica.distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=replica.rank,
                            world_size=replica.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, replica: Replica, device: torch.device) -> torch.nn.Module:
    """The module to run forward passes through: DDP around ``model`` when distributed."""
    if not replica.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def mean_across(value: torch.Tensor, replica: Replica) -> torch.Tensor:
    """The mean of a scalar over all processes (the global batch's loss for logging)."""
    if not replica.distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / replica.world_size


def barrier(replica: Replica) -> None:
    if replica.distributed:
        dist.barrier()
