import numpy as np
import pandas as pd
import pytest
import torch
from monai.transforms import Flip, RandAxisFlip, RandFlip

from cxrsynth.tasks import device, manifest, threads
from cxrsynth.tasks.classifier import extract_features, load_classifier, macro_auroc, predict, save_classifier, train_classifier
from cxrsynth.tasks.classifier.data import (
    LabelledImages,
    augmentation,
    check_images,
    classifier_labels,
    pos_weight,
    sample_weights,
    training_loader,
)
from cxrsynth.tasks.classifier.training import EarlyStopping, VariantImages, finding_aurocs, monitored_findings
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import write_png16
from cxrsynth.tasks.params import ParamsError, parse_params
from tests.blob_project import real_frame, synthetic_frame, write_images
from tests.conftest import conv_output_dtypes

torch.set_num_threads(1)
NODULE = FINDINGS.index("nodule")
AUGMENT = parse_params({}).mix.augmentation.model_dump(mode="json")


def _settings(**overrides):
    """Float32 unless ``mixed_precision`` says otherwise: the same numbers on every CPU."""
    return parse_params({"classifier": {"epochs": 2, "batch_size": 8, "patience": 2, "mixed_precision": "no",
                                        **overrides}}).classifier


def _project(tmp_path, splits=None, size=16):
    frame = manifest.conform(real_frame(splits or {"train": 24, "val": 8}), "generate")
    write_images(frame, tmp_path, size)
    return frame[frame.split == "train"], frame[frame.split == "val"]


def test_augmentation_keeps_the_heart_on_its_side():
    image = np.zeros((1, 32, 32), np.float32)
    image[0, 12:24, 4:13] = 1.0  # a bright "heart" on the image's left
    transform = augmentation(AUGMENT | {"prob": 1.0}, 32)
    transform.set_random_state(seed=0)
    assert not any(isinstance(t, (Flip, RandFlip, RandAxisFlip)) for t in transform.transforms)
    columns = np.arange(32)
    for _ in range(30):
        out = np.asarray(transform({"image": torch.from_numpy(image)})["image"])[0]
        centre = (out.sum(axis=0) * columns).sum() / out.sum()
        assert centre < 12, "the bright mass left the left half: a left-right flip"


def test_augmentation_is_reproducible_and_varies(tmp_path):
    train, _ = _project(tmp_path)
    data = LabelledImages(train, tmp_path, augmentation(AUGMENT | {"prob": 1.0}, 16))
    first = [b["image"] for b in training_loader(data, 8, seed=3, num_workers=0, oversample=False)]
    again = [b["image"] for b in training_loader(data, 8, seed=3, num_workers=0, oversample=False)]
    plain = [b["image"] for b in training_loader(LabelledImages(train, tmp_path), 8, seed=3, num_workers=0, oversample=False)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.allclose(first[0], plain[0])
    assert all(((b >= 0) & (b <= 1)).all() for b in first)


def test_pos_weight_and_oversampling_weights():
    frame = pd.DataFrame({f: pd.array([0, 0, 0, 1, None, 0, 0, 0] if f == "nodule" else [1, 0, 1, 0, 1, 0, 1, 1], dtype="Int8")
                          for f in FINDINGS})
    weights = pos_weight(frame).numpy()
    assert weights[NODULE] == 6.0  # six known negatives, one positive
    assert weights[FINDINGS.index("cardiomegaly")] == 1.0  # common findings are never weighed down
    assert sample_weights(frame).tolist() == [1, 1, 1, 6, 1, 1, 1, 1]


def _states(nodule, report=None, structured=None):
    """A frame whose nodule column (and its report_ / structured_ columns, when given) hold ``nodule``."""
    columns = {f: pd.array(nodule if f == "nodule" else [0] * len(nodule), dtype="Int8") for f in FINDINGS}
    for prefix, values in (("report_", report), ("structured_", structured)):
        if values is not None:
            columns |= {f"{prefix}{f}": pd.array(values if f == "nodule" else [0] * len(values), dtype="Int8")
                        for f in FINDINGS}
    return pd.DataFrame(columns)


def test_unmentioned_findings_count_as_negatives_only_when_asked_and_never_when_uncertain():
    frame = _states([1, None, None, 0, None], report=[1, None, -1, 0, None], structured=[1, None, None, 0, -1])
    assert np.isnan(classifier_labels(frame)[:, NODULE][[1, 2, 4]]).all()
    negative = classifier_labels(frame, "negative")[:, NODULE]
    # row 1 is not mentioned anywhere: absent; rows 2 and 4 were called uncertain: still left out
    assert negative[[0, 1, 3]].tolist() == [1, 0, 0] and np.isnan(negative[[2, 4]]).all()
    # a manifest without the report_ / structured_ columns (synthetic rows) counts every null absent
    assert classifier_labels(_states([1, None]), "negative")[:, NODULE].tolist() == [1, 0]
    assert pos_weight(frame, "negative")[NODULE] == 2.0 and pos_weight(frame)[NODULE] == 1.0
    with pytest.raises(ValueError, match="classifier.unmentioned"):
        classifier_labels(frame, "absent")


def test_monitored_findings_are_the_named_ones_with_both_classes():
    nan = np.nan
    labels = np.array([[1, 0, nan, 1, 0, 0], [0, 0, 1, 0, 1, 0], [1, 0, 0, nan, 0, 1]], dtype=np.float32)
    scorable = [0, 2, 3, 4, 5]  # finding 1 holds one class only
    assert monitored_findings(labels, None) == scorable
    assert monitored_findings(labels, [FINDINGS[2], FINDINGS[1]]) == [2]
    assert monitored_findings(labels, [FINDINGS[1]]) == scorable  # none of the named is scorable: all are


def test_oversampling_draws_rare_positives_more_often(tmp_path):
    train, _ = _project(tmp_path, {"train": 40, "val": 2})
    rare = train.copy()
    rare["nodule"] = pd.array([1] + [0] * (len(rare) - 1), dtype="Int8")
    loader = training_loader(LabelledImages(rare, tmp_path), 40, seed=0, num_workers=0, oversample=True)
    drawn = torch.cat([b["index"] for _ in range(5) for b in loader])
    assert (drawn == 0).float().mean() > 0.2  # 1 of 40 rows, weighted 39x: about half the draws


def test_macro_auroc_skips_unknown_labels_and_one_class_findings():
    nan = np.nan
    labels = np.array([[1, 0, nan], [0, 0, 1], [1, 0, 1], [nan, 0, 0]], dtype=np.float32)
    probabilities = np.array([[0.9, 0.1, 0.3], [0.2, 0.5, 0.8], [0.6, 0.2, 0.1], [0.0, 0.3, 0.5]])
    # finding 0: 1,0,1 vs .9,.2,.6 -> 1.0; finding 1 has one class; finding 2: 1,1,0 vs .8,.1,.5 -> 0.5
    assert macro_auroc(labels, probabilities) == pytest.approx(0.75)
    assert finding_aurocs(labels, probabilities) == pytest.approx({FINDINGS[0]: 1.0, FINDINGS[2]: 0.5})
    assert np.isnan(macro_auroc(labels[:, 1:2], probabilities[:, 1:2]))


def test_early_stopping_counts_epochs_without_gain():
    stopping = EarlyStopping(patience=2)
    improved = [stopping.update(score, epoch) for epoch, score in enumerate([0.5, 0.6, 0.6, 0.55], start=1)]
    assert improved == [True, True, False, False] and stopping.stop and stopping.best_epoch == 2


def test_training_stops_when_validation_stops_improving(tmp_path, monkeypatch):
    from cxrsynth.tasks.classifier import training

    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    monkeypatch.setattr(training, "macro_auroc", lambda labels, probabilities, findings=None: next(scores))
    train, val = _project(tmp_path)
    result = train_classifier(VariantImages(train, val, 16, tmp_path), {"variant": "t", "augmentation": None},
                              _settings(epochs=6, patience=2))
    assert result.history["epoch"].tolist() == [1, 2, 3, 4] and result.stopped_early
    assert result.best_epoch == 2 and result.monitor == "val_macro_auroc" and not result.model.training
    # the returned weights are epoch 2's, as a run of exactly two epochs ends with
    scores = iter([0.5, 0.7])
    two_epochs = train_classifier(VariantImages(train, val, 16, tmp_path), {"variant": "t", "augmentation": None},
                                  _settings(epochs=2))
    for (name, a), b in zip(result.model.state_dict().items(), two_epochs.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_every_training_batch_ticks_the_thread_governor(tmp_path, monkeypatch):
    ticks = []
    monkeypatch.setattr(threads, "tick", lambda: ticks.append(1))
    train, val = _project(tmp_path)  # 24 training images: 3 batches of 8 an epoch
    train_classifier(VariantImages(train, val, 16, tmp_path), {"variant": "t", "augmentation": None}, _settings(epochs=2))
    assert len(ticks) == 2 * 3


def test_early_stopping_follows_the_monitored_findings(tmp_path):
    train, val = _project(tmp_path)
    named = train_classifier(VariantImages(train, val, 16, tmp_path), {"variant": "t", "augmentation": None},
                             _settings(epochs=1, monitor_findings=["nodule"]))
    every = train_classifier(VariantImages(train, val, 16, tmp_path), {"variant": "t", "augmentation": None},
                             _settings(epochs=1))
    assert named.scored_findings == ["nodule"] and len(every.scored_findings) > 1
    with pytest.raises(ParamsError, match="classifier.monitor_findings"):
        _settings(monitor_findings=["pneumonia"])


@pytest.mark.parametrize("architecture", ["densenet_small_stride2"])
def test_small_lesion_architecture_trains_with_unmentioned_negatives(tmp_path, architecture):
    train, val = _project(tmp_path)
    result = train_classifier(VariantImages(train, val, 16, tmp_path), {"variant": "t", "augmentation": None},
                              _settings(architecture=architecture, unmentioned="negative"))
    assert result.model.architecture == architecture
    assert np.isfinite(result.history[["train_loss", "val_loss"]].to_numpy()).all()
    assert predict(result.model, val, root=tmp_path).shape == (len(val), len(FINDINGS))


def test_two_trainings_give_the_same_weights(tmp_path):
    train, val = _project(tmp_path)
    config = {"variant": "t", "augmentation": AUGMENT, "class_balance": "oversample"}
    first, second = (train_classifier(VariantImages(train, val, 16, tmp_path), config, _settings()) for _ in range(2))
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name
    pd.testing.assert_frame_equal(first.history, second.history)


def test_decoded_images_train_the_same_weights_and_seeds_differ(tmp_path):
    train, val = _project(tmp_path)
    config = {"variant": "t", "augmentation": AUGMENT, "class_balance": "oversample"}
    images = VariantImages(train, val, 16, tmp_path)
    decoded = images.decoded()
    assert decoded.train_pixels.shape == (len(train), 16, 16) and decoded.val_pixels.dtype == np.float32
    (tmp_path / train.path.iloc[0]).unlink()  # decoded: the files are not read again
    from_memory = train_classifier(decoded, config, _settings(seeds=[5, 6]), seed=5)
    default_seed = train_classifier(decoded, config, _settings(seeds=[5, 6]))  # the first of the seeds
    other_seed = train_classifier(decoded, config, _settings(seeds=[5, 6]), seed=6)
    pd.testing.assert_frame_equal(from_memory.history, default_seed.history)
    assert not from_memory.history["train_loss"].equals(other_seed.history["train_loss"])
    write_images(train.iloc[:1], tmp_path, 16)
    from_files = train_classifier(images, config, _settings(seeds=[5]))
    for (name, a), b in zip(from_memory.model.state_dict().items(), from_files.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_decoded_pixels_must_match_the_rows(tmp_path):
    train, _ = _project(tmp_path, {"train": 4, "val": 1})
    with pytest.raises(ValueError, match="3 decoded images for 4 manifest rows"):
        LabelledImages(train, tmp_path, pixels=np.zeros((3, 16, 16), np.float32))


def test_class_weighting_changes_training(tmp_path):
    train, val = _project(tmp_path)
    plain = train_classifier(VariantImages(train, val, 16, tmp_path), {"variant": "a", "augmentation": None},
                             _settings(epochs=1))
    weighted = train_classifier(VariantImages(train, val, 16, tmp_path),
                                {"variant": "b", "augmentation": None, "class_balance": "pos_weight"}, _settings(epochs=1))
    assert weighted.pos_weight == pos_weight(train).tolist() and plain.pos_weight is None
    assert weighted.history.train_loss[0] != plain.history.train_loss[0]


@pytest.mark.skipif(not device.native_bf16()[0], reason=f"this CPU lacks native bf16 ({device.native_bf16()[1]})")
def test_classifier_trains_and_predicts_under_bf16_with_float32_logits(tmp_path):
    train, val = _project(tmp_path)
    with conv_output_dtypes() as convs:
        result = train_classifier(VariantImages(train, val, 16, tmp_path), {"variant": "t", "augmentation": None},
                                  _settings(mixed_precision="bf16"))
    assert set(convs) == {torch.bfloat16}
    assert np.isfinite(result.history[["train_loss", "val_loss"]].to_numpy()).all()
    assert {v.dtype for v in result.model.state_dict().values() if v.is_floating_point()} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert result.model(torch.zeros(2, 1, 16, 16)).dtype == torch.float32  # the head stays float32
    fast = predict(result.model, val, root=tmp_path, precision=torch.bfloat16)
    assert fast.dtype == np.float32 and np.abs(fast - predict(result.model, val, root=tmp_path)).max() < 0.05
    features = extract_features(result.model, val, root=tmp_path, precision=torch.bfloat16)
    assert features.dtype == np.float32


def test_fp16_classifier_on_the_cpu_is_refused_naming_the_key(tmp_path):
    train, val = _project(tmp_path, {"train": 4, "val": 2})
    with pytest.raises(ValueError, match=r"classifier\.mixed_precision: fp16 autocast is for CUDA only"):
        train_classifier(VariantImages(train, val, 16, tmp_path), {"variant": "t", "augmentation": None},
                         _settings(mixed_precision="fp16"))


def test_check_images_quarantines_missing_and_wrong_sized(tmp_path):
    train, _ = _project(tmp_path, {"train": 4, "val": 1})
    write_png16(tmp_path / train.path.iloc[1], np.zeros((8, 8), np.float32))
    (tmp_path / train.path.iloc[2]).unlink()
    kept, quarantine = check_images(train, tmp_path, 16)
    assert kept.image_id.tolist() == train.image_id.iloc[[0, 3]].tolist()
    assert quarantine.reason.tolist() == ["image is 8x8, expected the working size 16x16", "image file missing"]


def test_saved_classifier_predicts_and_extracts_features(tmp_path):
    train, val = _project(tmp_path, {"train": 4, "val": 3})
    torch.manual_seed(0)
    from cxrsynth.models.classifier import build_classifier

    model = build_classifier("densenet_small").eval()
    save_classifier(model, tmp_path / "clf" / "model.pt")
    loaded = load_classifier(tmp_path / "clf")
    assert not loaded.training
    probabilities = predict(loaded, val, root=tmp_path, batch_size=2)
    assert probabilities.shape == (3, len(FINDINGS)) and ((probabilities > 0) & (probabilities < 1)).all()
    assert np.allclose(probabilities, predict(model, val, root=tmp_path))
    images = np.stack([LabelledImages(val, tmp_path)[i]["image"][0].numpy() for i in range(3)])
    features = extract_features(loaded, images, batch_size=2)
    assert features.shape == (3, loaded.feature_dim)
    assert np.allclose(features, extract_features(loaded, val, root=tmp_path), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="model.pt: classifier checkpoint not found"):
        load_classifier(tmp_path / "nowhere")


@pytest.mark.slow
def test_train_classifier_flow_on_a_tiny_project(tmp_path, blob_project):
    import json

    import mlflow

    from cxrsynth.flows.mix import mix_flow
    from cxrsynth.flows.train_classifier import train_classifier_flow

    blob_project(real_frame({"train": 40, "val": 12, "test": 8, "reserve": 8}), synthetic_frame({"nodule": 8, "pneumothorax": 8}))
    mix_flow("params.yaml", variant="baselines")
    mix_flow("params.yaml", variant="ratio_1")
    for variant in ("classical_aug", "class_weighted", "ratio_1"):
        train_classifier_flow("params.yaml", variant=variant)
        folder = tmp_path / "data/classifiers" / variant
        summary = json.loads((folder / "config.json").read_text())
        assert summary["seeds"] == [0, 1] and set(summary["per_seed"]) == {"0", "1"}
        val = manifest.read(tmp_path / "data/mix/baselines/real_only.parquet").query("split == 'val'")
        for seed in (0, 1):
            config = json.loads((folder / f"seed_{seed}/config.json").read_text())
            history = pd.read_csv(folder / f"seed_{seed}/history.csv")
            assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_macro_auroc"]
            assert config["variant"] == variant and config["seed"] == seed and config["architecture"] == "densenet_small"
            assert 1 <= config["best_epoch"] <= len(history) <= 2 and (folder / f"seed_{seed}/curves.png").stat().st_size > 0
            assert predict(load_classifier(folder / f"seed_{seed}"), val, root=tmp_path).shape == (12, len(FINDINGS))
        weights = [load_classifier(folder / f"seed_{seed}").state_dict() for seed in (0, 1)]
        assert any(not torch.equal(weights[0][key], weights[1][key]) for key in weights[0])  # two seeds, two models
        assert summary["mean_best_val_macro_auroc"] == pytest.approx(
            np.mean([summary["per_seed"][s]["best_val_macro_auroc"] for s in ("0", "1")]))
    assert json.loads((tmp_path / "data/classifiers/ratio_1/config.json").read_text())["rows"]["train"] > 40
    class_weighted = json.loads((tmp_path / "data/classifiers/class_weighted/seed_0/config.json").read_text())
    assert set(class_weighted["pos_weight"]) == set(FINDINGS)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cxrsynth"]).set_index("tags.mlflow.runName")
    parent = runs.loc["train_classifier:ratio_1"]
    assert parent["params.ratio"] == "1" and parent["tags.cxrsynth.variant"] == "ratio_1"
    assert parent["metrics.mean_best_val_macro_auroc"] == pytest.approx(
        json.loads((tmp_path / "data/classifiers/ratio_1/config.json").read_text())["mean_best_val_macro_auroc"])
    assert runs.loc["train_classifier:classical_aug", "params.augmentation"] == "True"
    assert parent["params.runtime.precision"] == "fp32"  # the tiny profile: float32
    assert parent["params.runtime.precision_reason"] == "classifier.mixed_precision = no"
    assert parent["params.runtime.memory_format.classifier"] == "contiguous"
    for seed in (0, 1):  # one run per seed, nested under the variant's, grouped like it
        child = runs.loc[f"train_classifier:ratio_1:seed_{seed}"]
        assert child["tags.mlflow.parentRunId"] == parent["run_id"] and child["params.seed"] == str(seed)
        assert child["tags.cxrsynth.stage"] == parent["tags.cxrsynth.stage"] and child["params.ratio"] == "1"
    run_id = runs.loc["train_classifier:ratio_1:seed_1", "run_id"]
    history = pd.read_csv(tmp_path / "data/classifiers/ratio_1/seed_1/history.csv")
    assert len(mlflow.MlflowClient().get_metric_history(run_id, "val_loss")) == len(history)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "classifier")}
    assert {"classifier/model.pt", "classifier/curves.png"} <= artifacts
