import pytest

from cxrsynth.tasks.metrics import classifiers, json_ready, numeric, textual
from cxrsynth.tasks.params import parse_params
from cxrsynth.tasks.stages import load
from tests.conftest import ROOT


def test_variants_follow_params_not_folders():
    params = parse_params({"mix": {"ratios": [0.5, 1, 2], "baselines": ["real_only", "class_weighted"]}})
    assert classifiers.variants(params) == [
        ("real_only", 0.0), ("class_weighted", 0.0), ("ratio_0.5", 0.5), ("ratio_1", 1.0), ("ratio_2", 2.0)]
    with pytest.raises(ValueError, match="mix.baselines must include 'real_only'"):
        classifiers.variants(parse_params({"mix": {"baselines": ["classical_aug"]}}))


def test_variant_dir_names_the_missing_classifier(tmp_path):
    with pytest.raises(ValueError, match="ratio_1.*config.json missing"):
        classifiers.variant_dir(load(ROOT), "ratio_1", tmp_path)
    (tmp_path / "data/classifiers/ratio_1").mkdir(parents=True)
    (tmp_path / "data/classifiers/ratio_1/config.json").write_text("{}")
    assert classifiers.variant_dir(load(ROOT), "ratio_1", tmp_path).name == "ratio_1"


def test_json_ready_and_numeric():
    import numpy as np

    cleaned = json_ready({"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": {"d": np.int64(3)}})
    assert cleaned == {"a": None, "b": [1.5, None], "c": {"d": 3}}
    assert numeric({"x": 1, "y": "text", "z": None, "flag": True, "w": 0.5}) == {"x": 1.0, "w": 0.5}
    assert numeric({"by_type.label+mask.n": 3}) == {"by_type.label_mask.n": 3.0}


def test_textual_keeps_the_words_numeric_drops():
    flat = {"per_finding.nodule.status": "too few positives (1 < 10)", "per_finding.nodule.auroc": None,
            "per_finding.effusion.auroc": 0.7, "by_type.label+mask.reading": "helps"}
    assert textual(flat) == {"per_finding.nodule.status": "too few positives (1 < 10)",
                             "by_type.label_mask.reading": "helps"}
