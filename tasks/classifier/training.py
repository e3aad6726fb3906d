"""Training one classifier on one variant: the same architecture, seed, budget and early stopping
for every variant, so the variants differ only in their training data."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from cxrsynth.models.classifier import FindingClassifier, build_classifier, lesion_loss, masked_bce
from cxrsynth.tasks import threads
from cxrsynth.tasks.device import (
    ChannelsLastSetting,
    MemoryFormat,
    Precision,
    autocast,
    choose_memory_format,
    choose_precision,
)
from cxrsynth.tasks.classifier.data import (
    LabelledImages,
    augmentation,
    decode_images,
    inference_loader,
    pos_weight,
    read_label_maps,
    training_loader,
)
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.params import ClassifierParams

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_macro_auroc")
# Only in the history of a classifier that learns lesion maps (classifier.lesion_weight > 0): the mean
# lesion_loss of its batches, unweighted. train_loss stays the labels' masked BCE, comparable with
# val_loss; the loss minimised is train_loss + lesion_weight * train_lesion_loss.
LESION_COLUMN = "train_lesion_loss"
PRECISION_KEY = "classifier.mixed_precision"


def scorable_findings(labels: np.ndarray) -> list[int]:
    """Indices of findings whose known labels hold both classes (where an AUROC exists)."""
    return [index for index in range(labels.shape[1])
            if {0.0, 1.0} <= set(labels[:, index][np.isin(labels[:, index], (0.0, 1.0))].tolist())]


def monitored_findings(labels: np.ndarray, names: Sequence[str] | None) -> list[int]:
    """Indices of the findings early stopping follows: ``names`` (``classifier.monitor_findings``) that
    have both classes in ``labels``; every such finding when ``names`` is None or none of them has."""
    scorable = scorable_findings(labels)
    chosen = [index for index in scorable if names is not None and FINDINGS[index] in names]
    return chosen or scorable


def finding_aurocs(labels: np.ndarray, probabilities: np.ndarray, findings: Sequence[int] | None = None) -> dict[str, float]:
    """AUROC of each of ``findings`` (indices; default: those with both classes among their known
    (0/1) labels), by finding name."""
    aurocs = {}
    for index in scorable_findings(labels) if findings is None else findings:
        known = np.isin(labels[:, index], (0.0, 1.0))
        aurocs[FINDINGS[index]] = float(roc_auc_score(labels[known, index], probabilities[known, index]))
    return aurocs


def macro_auroc(labels: np.ndarray, probabilities: np.ndarray, findings: Sequence[int] | None = None) -> float:
    """Mean AUROC over ``findings`` (default: those with both classes among their known labels); NaN if none."""
    scores = list(finding_aurocs(labels, probabilities, findings).values())
    return float(np.mean(scores)) if scores else float("nan")


@dataclass
class EarlyStopping:
    """Keeps the best score (higher is better) and says when ``patience`` epochs brought no gain."""

    patience: int
    best: float = -np.inf
    best_epoch: int = 0
    waited: int = 0

    def update(self, score: float, epoch: int) -> bool:
        """Record an epoch's score; True if it is a new best."""
        if score > self.best:
            self.best, self.best_epoch, self.waited = score, epoch, 0
            return True
        self.waited += 1
        return False

    @property
    def stop(self) -> bool:
        return self.waited >= self.patience


@dataclass
class TrainResult:
    model: FindingClassifier  # the best epoch's weights, in eval mode
    history: pd.DataFrame  # HISTORY_COLUMNS (and LESION_COLUMN when learning lesion maps), one row per epoch run
    best_epoch: int
    monitor: str  # val_macro_auroc (the mean over scored_findings), or val_loss when no validation finding has both classes
    stopped_early: bool
    scored_findings: list[str] = field(default_factory=list)  # the findings val_macro_auroc averages
    pos_weight: list[float] | None = None


def classifier_precision(settings: ClassifierParams, device: torch.device | str) -> Precision:
    """The autocast of the classifier's training and inference on ``device`` (``classifier.mixed_precision``)."""
    return choose_precision(settings.mixed_precision, torch.device(device), PRECISION_KEY)


def classifier_memory_format(settings: ClassifierParams, channels_last: ChannelsLastSetting,
                             device: torch.device | str) -> MemoryFormat:
    """The classifier's memory format for training and inference on ``device`` under its precision
    (``runtime.channels_last`` = ``channels_last``)."""
    return choose_memory_format(channels_last, "classifier", device, classifier_precision(settings, device).dtype)


def logits(model: FindingClassifier, images: torch.Tensor, precision: torch.dtype | None) -> torch.Tensor:
    """The model's float32 logits, its forward pass under autocast to ``precision`` (None: float32)."""
    with autocast(images.device, precision):
        return model(images).float()


@dataclass(frozen=True)
class LesionTraining:
    """How the lesion maps join the loss (``classifier.lesion_weight`` > 0)."""

    weight: float
    pos_weight: float


def _batch_losses(model, batch, weights, device, precision: torch.dtype | None,
                  lesions: LesionTraining | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The labels' masked BCE and, when learning lesion maps, the lesion loss of one batch."""
    images, labels = batch["image"].to(device), batch["labels"].to(device)
    if lesions is None:
        return masked_bce(logits(model, images, precision), labels, weights), None
    with autocast(images.device, precision):
        scores, maps = model.logits_and_lesion_maps(images)
    lesion = lesion_loss(maps, batch["mask"].to(device), batch["mask_known"].to(device), lesions.pos_weight)
    return masked_bce(scores.float(), labels, weights), lesion


def _train_epoch(model, loader, optimizer, weights, device, epoch: int, precision: torch.dtype | None,
                 lesions: LesionTraining | None = None) -> dict[str, float]:
    """One epoch; the mean of each loss over its batches (``train_loss``, and ``LESION_COLUMN`` with lesions)."""
    model.train()
    totals, batches = {"train_loss": 0.0, LESION_COLUMN: 0.0}, 0
    for batch in tqdm(loader, desc=f"epoch {epoch}", leave=False, unit="batch"):
        optimizer.zero_grad(set_to_none=True)
        label_loss, lesion = _batch_losses(model, batch, weights, device, precision, lesions)
        loss = label_loss if lesion is None else label_loss + lesions.weight * lesion
        loss.backward()
        optimizer.step()
        threads.tick()  # fewer torch threads while other processes keep CPUs busy
        totals["train_loss"] += label_loss.item()
        totals[LESION_COLUMN] += 0.0 if lesion is None else lesion.item()
        batches += 1
    means = {name: total / max(batches, 1) for name, total in totals.items()}
    return means if lesions is not None else {"train_loss": means["train_loss"]}


@torch.no_grad()
def _validate(model, loader, device, precision: torch.dtype | None) -> tuple[float, np.ndarray]:
    """Unweighted masked BCE (comparable across variants) and the predicted probabilities."""
    model.eval()
    total, count, probabilities = 0.0, 0, []
    for batch in loader:
        scores = logits(model, batch["image"].to(device), precision)
        labels = batch["labels"].to(device)
        total += masked_bce(scores, labels).item() * len(labels)
        count += len(labels)
        probabilities.append(torch.sigmoid(scores).cpu().numpy())
    return total / max(count, 1), np.concatenate(probabilities)


@dataclass(frozen=True)
class VariantImages:
    """A variant's training and validation rows, their images under ``root`` at ``image_size``;
    ``train_pixels`` / ``val_pixels`` hold them decoded once (``decoded``) for training several seeds."""

    train: pd.DataFrame
    val: pd.DataFrame
    image_size: int
    root: str | Path = "."
    train_pixels: np.ndarray | None = field(default=None, repr=False)
    val_pixels: np.ndarray | None = field(default=None, repr=False)
    train_label_maps: np.ndarray | None = field(default=None, repr=False)  # read_label_maps of train

    def decoded(self, lesion_maps: bool = False) -> "VariantImages":
        """The same rows with every image read into memory once, and the training rows' lesion label
        maps too when ``lesion_maps`` (a classifier learning them: ``classifier.lesion_weight`` > 0)."""
        maps = read_label_maps(self.train, self.root, self.image_size) if lesion_maps else None
        return replace(self, train_pixels=decode_images(self.train, self.root),
                       val_pixels=decode_images(self.val, self.root), train_label_maps=maps)

    def lesion_maps(self) -> np.ndarray:
        """The training rows' label maps (read now unless ``decoded`` read them); an error naming
        classifier.lesion_weight when no training row has a lesion mask to learn from."""
        maps = self.train_label_maps
        if maps is None:
            maps = read_label_maps(self.train, self.root, self.image_size)
        if not maps.any():
            raise ValueError(f"classifier.lesion_weight > 0, but none of the {len(self.train)} training rows has a lesion "
                             "mask (mask_path: prepare_masks' label maps, generate's masks): set it to 0 or provide masks")
        return maps


def train_classifier(
    images: VariantImages,
    variant_config: dict,
    settings: ClassifierParams,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
    *,
    seed: int | None = None,
    channels_last: ChannelsLastSetting = False,
) -> TrainResult:
    """Train on ``images.train`` with the variant's augmentation and balancing; stop early on ``images.val``.
    ``seed`` (default: the first of ``settings.seeds``) fixes the initial weights and the batch order;
    ``channels_last`` (``runtime.channels_last``) the memory format, which the weights are the same in.
    The images are one-channel, so they are already in either format."""
    train, val, image_size, root = images.train, images.val, images.image_size, images.root
    if train.empty or val.empty:
        raise ValueError(f"variant {variant_config.get('variant')!r} needs training and validation rows "
                         f"(has {len(train)} and {len(val)})")
    device = torch.device(device)
    precision = classifier_precision(settings, device).dtype
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    seed = settings.seeds[0] if seed is None else seed
    torch.manual_seed(seed)
    lesions = LesionTraining(settings.lesion_weight, settings.lesion_pos_weight) if settings.lesion_weight > 0 else None
    layout = classifier_memory_format(settings, channels_last, device)
    model = layout.module(build_classifier(settings.architecture, lesion_head=lesions is not None).to(device))
    transform = augmentation(variant_config["augmentation"], image_size) if variant_config.get("augmentation") else None
    train_data = LabelledImages(train, root, transform, images.train_pixels, settings.unmentioned,
                                images.lesion_maps() if lesions is not None else None)
    val_data = LabelledImages(val, root, pixels=images.val_pixels, unmentioned=settings.unmentioned)
    balance = variant_config.get("class_balance", "none")
    loader = training_loader(train_data, settings.batch_size, seed, settings.num_workers, balance == "oversample",
                             settings.unmentioned)
    val_loader = inference_loader(val_data, settings.batch_size, settings.num_workers)
    weights = pos_weight(train, settings.unmentioned).to(device) if balance == "pos_weight" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)

    scored = monitored_findings(val_data.labels, settings.monitor_findings)
    monitor = "val_macro_auroc" if scored else "val_loss"
    stopping = EarlyStopping(settings.patience)
    best_state, rows = None, []
    for epoch in tqdm(range(1, settings.epochs + 1), desc=f"train {variant_config.get('variant', '')}", unit="epoch"):
        train_losses = _train_epoch(model, loader, optimizer, weights, device, epoch, precision, lesions)
        val_loss, probabilities = _validate(model, val_loader, device, precision)
        row = {"epoch": epoch, **train_losses, "val_loss": val_loss,
               "val_macro_auroc": macro_auroc(val_data.labels, probabilities, scored)}
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if stopping.update(row["val_macro_auroc"] if scored else -val_loss, epoch):
            best_state = copy.deepcopy(model.state_dict())
        if stopping.stop:
            break
    if best_state is None:
        raise RuntimeError(f"variant {variant_config.get('variant')!r}: no epoch gave a finite {monitor} (training diverged)")
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model,
        history=pd.DataFrame(rows, columns=[*HISTORY_COLUMNS, *([LESION_COLUMN] if lesions is not None else [])]),
        best_epoch=stopping.best_epoch,
        monitor=monitor,
        stopped_early=len(rows) < settings.epochs,
        scored_findings=[FINDINGS[index] for index in scored],
        pos_weight=weights.cpu().tolist() if weights is not None else None,
    )
