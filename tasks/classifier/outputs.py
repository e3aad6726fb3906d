"""What a trained variant leaves in its train_classifier stage's out (data/classifiers/<variant>/ in
dvc.yaml): weights, history, config, curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cxrsynth.tasks.classifier.inference import CHECKPOINT, save_classifier  # noqa: E402
from cxrsynth.tasks.classifier.training import TrainResult  # noqa: E402
from cxrsynth.tasks.io import atomic_path, write_csv, write_json  # noqa: E402


def write_history(history: pd.DataFrame, path: str | Path) -> None:
    write_csv(path, history)


def plot_history(history: pd.DataFrame, path: str | Path, title: str) -> None:
    """Loss curves and the validation macro AUROC per epoch, side by side."""
    figure, (losses, auroc) = plt.subplots(1, 2, figsize=(9, 3.5))
    losses.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    losses.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    losses.set(xlabel="epoch", ylabel="masked BCE", title="loss")
    losses.legend()
    auroc.plot(history["epoch"], history["val_macro_auroc"], marker="o", color="tab:green")
    auroc.set(xlabel="epoch", ylabel="macro AUROC", title="validation macro AUROC")
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=100)
    plt.close(figure)


def write_outputs(result: TrainResult, directory: str | Path, config: dict) -> dict[str, Path]:
    """Write model.pt (best weights), history.csv, config.json and curves.png; return their paths."""
    directory = Path(directory)
    paths = {name: directory / name for name in (CHECKPOINT, "history.csv", "config.json", "curves.png")}
    save_classifier(result.model, paths[CHECKPOINT])
    write_history(result.history, paths["history.csv"])
    write_json(paths["config.json"], config)
    plot_history(result.history, paths["curves.png"], f"classifier: {config['variant']}")
    return paths
