"""Training checkpoints: written atomically every interval, the newest one resumed from.

A checkpoint holds the model, EMA, optimizer and grad-scaler states, the step, the loss history,
the RNG states and the digest of the model config. Only the newest is kept: it is written in full
before older ones are removed, so a crash loses at most one interval.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from cxrsynth.tasks import torch_files

_NAME = re.compile(r"step_(\d+)\.pt$")


class CheckpointMismatch(ValueError):
    """A checkpoint written for a differently shaped model."""


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.pt"


def checkpoints(folder: str | Path) -> list[Path]:
    """Checkpoint files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1] if found else None


def save_checkpoint(folder: str | Path, step: int, state: dict) -> Path:
    """Write ``state`` as the checkpoint of ``step``, then remove the older ones."""
    path = checkpoint_path(folder, step)
    torch_files.save({**state, "step": step}, path)
    for older in checkpoints(folder):
        if older != path:
            older.unlink(missing_ok=True)
    return path


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Every (dotted) key whose value differs between two configs, as 'key: checkpoint A, now B'."""
    keys = sorted(set(saved) | set(current))
    found = []
    for key in keys:
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: checkpoint {a!r}, now {b!r}")
    return found


def load_checkpoint(path: str | Path, digest: str, config: dict) -> dict:
    """Read a checkpoint, refusing one whose model config differs from ``config``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("digest") != digest:
        changes = "; ".join(config_differences(state.get("config", {}), config)) or "unknown differences"
        raise CheckpointMismatch(
            f"{path}: checkpoint belongs to a different model ({changes}). Restore those params, or delete "
            f"{Path(path).parent} to train from scratch."
        )
    return state
