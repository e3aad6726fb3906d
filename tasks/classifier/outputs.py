"""What a trained variant leaves in its train_classifier stage's out (data/classifiers/<variant>/ in
dvc.yaml): one folder per classifier seed, ``seed_<s>/`` with weights, history, config and curves, and
the variant's ``config.json`` beside them naming its seeds and what each run reached."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cxrsynth.tasks.classifier.inference import CHECKPOINT, save_classifier  # noqa: E402
from cxrsynth.tasks.classifier.training import LESION_COLUMN, TrainResult  # noqa: E402
from cxrsynth.tasks.io import atomic_path, write_csv, write_json  # noqa: E402


VARIANT_CONFIG = "config.json"


def seed_dir(directory: str | Path, seed: int) -> Path:
    """Where the classifier of one seed lives inside its variant's folder."""
    return Path(directory) / f"seed_{seed}"


def write_variant_config(directory: str | Path, config: dict) -> Path:
    """The variant's own config.json (its seeds and per-seed results), written after every seed's folder."""
    path = Path(directory) / VARIANT_CONFIG
    write_json(path, config)
    return path


def seed_dirs(directory: str | Path, seeds: list[int]) -> dict[int, Path]:
    """Seed -> its classifier folder; a clear error naming the variant folder and the seeds it lacks."""
    folders = {seed: seed_dir(directory, seed) for seed in seeds}
    missing = [seed for seed, folder in folders.items() if not (folder / VARIANT_CONFIG).is_file()]
    if missing:
        raise ValueError(f"{directory}: no trained classifier for seed(s) {missing} of classifier.seeds {seeds}; "
                         "run the variant's train_classifier stage with these seeds")
    return folders


def write_history(history: pd.DataFrame, path: str | Path) -> None:
    write_csv(path, history)


def plot_history(history: pd.DataFrame, path: str | Path, title: str) -> None:
    """Loss curves (and the lesion-map loss when there is one) and the validation macro AUROC per epoch, side by side."""
    figure, (losses, auroc) = plt.subplots(1, 2, figsize=(9, 3.5))
    losses.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    losses.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    if LESION_COLUMN in history:  # a classifier that learns lesion maps too
        losses.plot(history["epoch"], history[LESION_COLUMN], marker="o", linestyle="--", label="train lesion maps")
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
    paths = {name: directory / name for name in (CHECKPOINT, "history.csv", VARIANT_CONFIG, "curves.png")}
    save_classifier(result.model, paths[CHECKPOINT])
    write_history(result.history, paths["history.csv"])
    write_json(paths[VARIANT_CONFIG], config)
    seed = f", seed {config['seed']}" if "seed" in config else ""
    plot_history(result.history, paths["curves.png"], f"classifier: {config['variant']}{seed}")
    return paths
