"""tasks/classifier/outputs.py: what a trained variant leaves in its folder."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrsynth.models.classifier import build_classifier
from cxrsynth.tasks.classifier.inference import CHECKPOINT, load_classifier
from cxrsynth.tasks.classifier.outputs import plot_history, write_history, write_outputs
from cxrsynth.tasks.classifier.training import TrainResult
from cxrsynth.tasks.io import write_json


def history() -> pd.DataFrame:
    return pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4], "val_loss": [0.72, 0.6, 0.61],
                         "val_macro_auroc": [0.55, 0.66, 0.64]})


def test_history_round_trips_and_leaves_no_temporary_file(tmp_path):
    write_history(history(), tmp_path / "deep" / "history.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "deep" / "history.csv"), history())
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["history.csv"]


def test_curves_are_a_png_with_both_panels(tmp_path):
    plot_history(history(), tmp_path / "curves.png", "classifier: ratio_1")
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.width > 2 * image.height  # loss and AUROC side by side
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    green = (pixels[..., 1] > 100) & (pixels[..., 0] < 80) & (pixels[..., 2] < 80)  # tab:green: the AUROC curve
    half = pixels.shape[1] // 2
    assert green[:, half:].sum() > 50 and not green[:, :half].any()  # right panel only; losses are blue and orange


def test_write_outputs_writes_the_four_files_the_evaluate_stage_reads(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("densenet_small").eval()
    result = TrainResult(model=model, history=history(), best_epoch=2, monitor="val_macro_auroc", stopped_early=False)
    config = {"variant": "ratio_1", "architecture": "densenet_small", "seed": 0}
    paths = write_outputs(result, tmp_path / "ratio_1", config)
    assert set(paths) == {CHECKPOINT, "history.csv", "config.json", "curves.png"}
    assert all(path.is_file() and path.parent == tmp_path / "ratio_1" for path in paths.values())
    assert json.loads(paths["config.json"].read_text()) == config
    pd.testing.assert_frame_equal(pd.read_csv(paths["history.csv"]), history())
    loaded = load_classifier(tmp_path / "ratio_1")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_seed_folders_and_the_variant_config(tmp_path):
    from cxrsynth.tasks.classifier.outputs import seed_dir, seed_dirs, write_variant_config

    variant = tmp_path / "ratio_1"
    assert seed_dir(variant, 3) == variant / "seed_3"
    for seed in (0, 1):
        write_json(seed_dir(variant, seed) / "config.json", {"variant": "ratio_1", "seed": seed})
    path = write_variant_config(variant, {"variant": "ratio_1", "seeds": [0, 1]})
    assert path == variant / "config.json" and json.loads(path.read_text())["seeds"] == [0, 1]
    assert seed_dirs(variant, [0, 1]) == {0: variant / "seed_0", 1: variant / "seed_1"}
    with pytest.raises(ValueError, match=r"seed\(s\) \[2\] of classifier.seeds \[0, 1, 2\]"):
        seed_dirs(variant, [0, 1, 2])
