"""The classifier that learns lesion maps too (classifier.lesion_weight > 0): its loss, the masks its
data yields beside the images, which targets are known, and its training and checkpoints."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cxrsynth.models.classifier import build_classifier, lesion_loss
from cxrsynth.tasks import manifest
from cxrsynth.tasks.classifier import load_classifier, predict, save_classifier, train_classifier
from cxrsynth.tasks.classifier.data import LabelledImages, augmentation, lesion_targets_known, read_label_maps, training_loader
from cxrsynth.tasks.classifier.inference import CHECKPOINT
from cxrsynth.tasks.classifier.training import HISTORY_COLUMNS, LESION_COLUMN, VariantImages
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import write_mask
from cxrsynth.tasks.masks import labelmap
from cxrsynth.tasks.params import parse_params
from tests.blob_project import BLOB_CENTRES, real_frame, write_images

torch.set_num_threads(1)
NODULE = FINDINGS.index("nodule")
AUGMENT = parse_params({}).mix.augmentation.model_dump(mode="json")


def _square_masks():
    """(1, F, 16, 16): one nodule pixel, in the top-left cell of a 4 x 4 grid."""
    masks = torch.zeros(1, len(FINDINGS), 16, 16)
    masks[0, NODULE, 1, 2] = 1.0
    return masks


def test_a_perfect_lesion_map_costs_less_than_an_empty_one_and_positives_weigh_pos_weight():
    masks, known = _square_masks(), torch.ones(1, len(FINDINGS), dtype=torch.bool)
    target = torch.zeros(1, len(FINDINGS), 4, 4)
    target[0, NODULE, 0, 0] = 1.0  # the max-pool marks the whole cell of a single lesion pixel
    perfect = torch.where(target > 0, 10.0, -10.0)
    empty = torch.full_like(perfect, -10.0)
    assert lesion_loss(perfect, masks, known, 20.0) < 1e-3 < lesion_loss(empty, masks, known, 20.0)
    # zero logits cost log 2 a cell, pos_weight times that in the one lesion cell; only nodule's map is known
    only_nodule = torch.zeros_like(known)
    only_nodule[0, NODULE] = True
    for weight in (1.0, 20.0):
        expected = (weight + 15) * math.log(2) / 16
        assert lesion_loss(torch.zeros_like(perfect), masks, only_nodule, weight).item() == pytest.approx(expected, rel=1e-5)


def test_unknown_pairs_get_no_gradient_and_nothing_known_gives_zero():
    maps = torch.randn(2, len(FINDINGS), 4, 4, requires_grad=True)
    masks = torch.ones(2, len(FINDINGS), 16, 16)
    known = torch.zeros(2, len(FINDINGS), dtype=torch.bool)
    known[1, NODULE] = True
    lesion_loss(maps, masks, known, 20.0).backward()
    grad = maps.grad.abs().flatten(2).sum(-1)
    assert grad[1, NODULE] > 0 and grad[~known].eq(0).all()
    maps.grad = None
    nothing = lesion_loss(maps, masks, torch.zeros_like(known), 20.0)
    nothing.backward()
    assert nothing.item() == 0.0 and maps.grad is not None and maps.grad.eq(0).all()


def test_known_targets_are_masked_findings_and_negatives_not_unmasked_positives():
    nan = np.nan
    labels = np.full((4, len(FINDINGS)), nan, np.float32)
    labels[:, NODULE] = [1, 1, 0, nan]
    maps = np.zeros((4, 8, 8), np.uint8)
    maps[0, 2, 3] = 1 << NODULE  # row 0: positive with its mask
    maps[3, 5, 5] = 1 << NODULE  # row 3: not mentioned, but its mask says where the nodule is
    known = lesion_targets_known(labels, maps)
    assert known[:, NODULE].tolist() == [True, False, True, True]  # row 1: positive without a mask: unknown
    assert not known[:, [i for i in range(len(FINDINGS)) if i != NODULE]].any()  # NaN, unmasked: unknown


def _one_row(size=32):
    frame = pd.DataFrame({"image_id": ["a"], "path": ["a.png"], **{f: pd.array([int(f == "nodule")], dtype="Int8")
                                                                    for f in FINDINGS}})
    image = np.zeros((1, size, size), np.float32)
    image[0, 6:14, 18:26] = 1.0  # a bright square off the centre, so every rotation or shift moves it
    label_map = (image[0] > 0).astype(np.uint8) << NODULE
    return frame, image, label_map[None]


def test_the_augmentation_moves_the_lesion_mask_with_its_image():
    frame, image, label_maps = _one_row()
    data = LabelledImages(frame, pixels=image, label_maps=label_maps,
                          transform=augmentation(AUGMENT | {"prob": 1.0, "rotate_degrees": 15, "translate_fraction": 0.1}, 32))
    data.transform.set_random_state(seed=0)
    moved = 0
    for _ in range(10):
        item = data[0]
        mask, bright = item["mask"][NODULE], item["image"][0] > 0.5
        assert item["mask"].dtype == torch.bool and item["mask"].shape == (len(FINDINGS), 32, 32)
        assert (mask & bright).sum() / (mask | bright).sum() > 0.7  # still the square's own pixels
        assert not item["mask"][[i for i in range(len(FINDINGS)) if i != NODULE]].any()
        moved += not torch.equal(mask, torch.from_numpy(label_maps[0] > 0))
    assert moved >= 5 and item["mask_known"].all()  # nodule by its mask, the others by their 0 labels


def test_label_maps_are_read_once_with_empty_maps_for_rows_without_one(tmp_path):
    frame = pd.DataFrame({"path": ["a.png", "b.png"], "mask_path": ["m/a.png", None]})
    label_map = np.zeros((8, 8), np.uint8)
    label_map[2:4, 2:4] = 1 << NODULE
    write_mask(tmp_path / "m/a.png", label_map)
    maps = read_label_maps(frame, tmp_path, 8)
    assert maps.dtype == np.uint8 and np.array_equal(maps[0], label_map) and not maps[1].any()
    with pytest.raises(ValueError, match=r"m/a.png: label map is 8x8, expected the working size 16x16"):
        read_label_maps(frame, tmp_path, 16)
    images = VariantImages(frame.iloc[1:], frame.iloc[1:], 8, tmp_path)
    with pytest.raises(ValueError, match="classifier.lesion_weight"):
        images.lesion_maps()


def _masked_project(tmp_path, size=32):
    """Blob images whose training rows with a present finding carry its blob as their label map."""
    frame = manifest.conform(real_frame({"train": 24, "val": 8}), "generate")
    write_images(frame, tmp_path, size)
    rows, cols = np.mgrid[:size, :size] / size
    labels, paths = manifest.label_matrix(frame), []
    for image_id, row in zip(frame["image_id"], labels):
        per_finding = {f: (rows - r) ** 2 + (cols - c) ** 2 < 0.01 for f, (r, c), state in zip(FINDINGS, BLOB_CENTRES, row)
                       if state == 1}
        paths.append(f"masks/{image_id}.png" if per_finding else None)
        if per_finding:
            write_mask(tmp_path / paths[-1], labelmap.encode(per_finding, (size, size)))
    frame["mask_path"] = paths
    return frame[frame.split == "train"], frame[frame.split == "val"]


def test_a_classifier_with_a_lesion_head_trains_and_predicts_as_one_without(tmp_path):
    train, val = _masked_project(tmp_path)
    settings = parse_params({"classifier": {"epochs": 2, "batch_size": 8, "patience": 2, "mixed_precision": "no",
                                            "lesion_weight": 1.0}}).classifier
    images = VariantImages(train, val, 32, tmp_path).decoded(lesion_maps=True)
    config = {"variant": "t", "augmentation": AUGMENT, "class_balance": "none"}
    result = train_classifier(images, config, settings)
    assert list(result.history.columns) == [*HISTORY_COLUMNS, LESION_COLUMN]
    assert np.isfinite(result.history[LESION_COLUMN]).all() and (result.history[LESION_COLUMN] > 0).all()
    assert result.model.lesion_head is not None
    probabilities = predict(result.model, val, tmp_path)
    assert probabilities.shape == (len(val), len(FINDINGS))
    save_classifier(result.model, tmp_path / "clf" / CHECKPOINT)
    loaded = load_classifier(tmp_path / "clf")
    assert loaded.lesion_head is not None
    np.testing.assert_allclose(predict(loaded, val, tmp_path), probabilities, atol=1e-6)


def test_the_lesion_head_leaves_the_logits_and_the_checkpoint_of_a_classifier_without_it(tmp_path):
    torch.manual_seed(0)
    plain = build_classifier("densenet_small").eval()
    torch.manual_seed(0)
    headed = build_classifier("densenet_small", lesion_head=True).eval()
    assert all(torch.equal(value, headed.state_dict()[key]) for key, value in plain.state_dict().items())
    assert not any(key.startswith("lesion_head") for key in plain.state_dict())
    x = torch.rand(2, 1, 64, 64)
    logits, maps = headed.logits_and_lesion_maps(x)
    assert torch.allclose(logits, headed(x)) and torch.allclose(headed(x), plain(x))
    assert maps.shape == (2, len(FINDINGS), 4, 4)  # 64 px: the small DenseNet's 4 x 4 final map
    with pytest.raises(ValueError, match="no lesion head"):
        plain.logits_and_lesion_maps(x)
    save_classifier(plain, tmp_path / CHECKPOINT)
    payload = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert set(payload) == {"architecture", "findings", "state_dict"}  # what a classifier saved before the head held
    loaded = load_classifier(tmp_path)
    assert loaded.lesion_head is None and torch.allclose(loaded(x), plain(x))
