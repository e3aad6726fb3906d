import pytest
import torch

from cxrsynth.tasks.diffusion.checkpoints import (
    CheckpointMismatch,
    checkpoint_path,
    checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def test_only_the_newest_checkpoint_is_kept(tmp_path):
    assert latest_checkpoint(tmp_path / "none") is None
    for step in (2, 4, 10):
        save_checkpoint(tmp_path, step, {"digest": "d", "config": {}, "weights": torch.ones(2) * step})
    assert checkpoints(tmp_path) == [checkpoint_path(tmp_path, 10)]
    state = load_checkpoint(latest_checkpoint(tmp_path), "d", {})
    assert state["step"] == 10 and torch.equal(state["weights"], torch.full((2,), 10.0))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_checkpoint_of_another_config_names_what_changed(tmp_path):
    save_checkpoint(tmp_path, 1, {"digest": "old", "config": {"unet": {"channels": [8, 16]}, "label_dim": 16}})
    with pytest.raises(CheckpointMismatch, match=r"unet.channels: checkpoint \[8, 16\], now \[8, 32\]"):
        load_checkpoint(checkpoint_path(tmp_path, 1), "new", {"unet": {"channels": [8, 32]}, "label_dim": 16})
