"""The downstream classifier: training one per variant, loading it back, and applying it."""

from cxrsynth.tasks.classifier.inference import extract_features, load_classifier, predict, save_classifier
from cxrsynth.tasks.classifier.training import (
    TrainResult,
    classifier_memory_format,
    classifier_precision,
    macro_auroc,
    train_classifier,
)
from cxrsynth.tasks.device import resolve_device  # re-exported: the classifier flows import it from here

__all__ = ["TrainResult", "classifier_memory_format", "classifier_precision", "extract_features", "load_classifier",
           "macro_auroc", "predict", "resolve_device", "save_classifier", "train_classifier"]
