import numpy as np
import pytest
import torch

from cxrsynth.models.segmenter import MaskedDiceBCELoss
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.metrics.lesions import (
    CROP_SIZE,
    SegmenterTraining,
    condition_accuracy,
    iou,
    known_channels,
    lesion_crop,
    lesion_crops,
    lesion_ssim,
    mask_iou,
    segment,
    train_segmenter,
)

NODULE = FINDINGS.index("nodule")


def test_condition_accuracy_hand_case():
    requested = np.full((6, len(FINDINGS)), np.nan)
    requested[:4, NODULE] = 1
    requested[4:, NODULE] = 0
    probabilities = np.zeros((6, len(FINDINGS)))
    probabilities[:, NODULE] = [0.9, 0.8, 0.2, 0.7, 0.1, 0.75]
    result = condition_accuracy(requested, probabilities, {"nodule": 0.5, "pneumothorax": None}, ["nodule", "pneumothorax"])
    assert result["nodule"]["detected"] == 0.75 and result["nodule"]["rejected"] == 0.5
    assert result["nodule"]["accuracy"] == pytest.approx(4 / 6)
    assert result["pneumothorax"]["accuracy"] is None


def test_known_channels():
    masks = np.zeros((2, len(FINDINGS), 4, 4), bool)
    masks[0, NODULE, 1, 1] = True
    states = np.full((2, len(FINDINGS)), np.nan)
    states[:, NODULE] = 1  # present in both, mask pixels only in the first
    states[:, 0] = -1  # uncertain: unknown
    known = known_channels(masks, states)
    assert known[0, NODULE] and not known[1, NODULE]
    assert not known[:, 0].any() and known[:, 1].all()


def test_iou_and_mask_iou():
    a = np.zeros((4, 4), bool); a[:2] = True
    b = np.zeros((4, 4), bool); b[1:3] = True
    assert iou(a, b) == pytest.approx(1 / 3) and iou(a, a) == 1 and np.isnan(iou(~a & a, ~a & a))
    target = np.zeros((2, len(FINDINGS), 4, 4), bool)
    target[:, NODULE] = a
    predicted = target.copy()
    predicted[1, NODULE] = b
    result = mask_iou(predicted, target, FINDINGS)
    assert result["nodule"] == {"n": 2, "iou": pytest.approx((1 + 1 / 3) / 2)}
    assert "pneumothorax" not in result and result["all"]["n"] == 2


def test_mask_iou_of_no_images_is_empty_not_an_error():
    # A real NIH run: every synthetic image was label+text conditioned, so none had a mask.
    none = np.zeros((0, len(FINDINGS), 8, 8), bool)
    assert mask_iou(none, none, FINDINGS) == {"all": {"n": 0, "iou": None}}


def test_masked_loss_ignores_unknown_channels():
    logits = torch.zeros(1, len(FINDINGS), 4, 4)
    target = torch.zeros_like(logits)
    target[0, NODULE] = 1
    known = torch.zeros(1, len(FINDINGS), dtype=torch.bool)
    known[0, 0] = True
    loss = MaskedDiceBCELoss()
    only_first = loss(logits, target, known)
    known[0, NODULE] = True
    assert loss(logits, target, known) != only_first  # the nodule channel now counts
    target[0, NODULE] = 0
    known[0, NODULE] = False
    assert loss(logits, target, known) == only_first


def test_dice_counts_only_channels_that_hold_a_lesion():
    logits = torch.full((1, len(FINDINGS), 4, 4), -4.0)
    target = torch.zeros_like(logits)
    known = torch.ones(1, len(FINDINGS), dtype=torch.bool)
    loss = MaskedDiceBCELoss()
    all_empty = loss(logits, target, known)
    assert all_empty < 0.05  # confident "nothing" on empty channels: BCE only, no Dice penalty
    target[0, NODULE, 1:3, 1:3] = 1
    with_lesion = loss(logits, target, known)
    assert with_lesion > 0.9  # the missed nodule costs a whole Dice term, not a sixth of one


def test_segmenter_learns_bright_squares():
    rng = np.random.default_rng(0)
    images = rng.normal(0.3, 0.02, (24, 16, 16)).astype(np.float32)
    masks = np.zeros((24, len(FINDINGS), 16, 16), bool)
    for i in range(24):
        y, x = rng.integers(0, 10, 2)
        masks[i, NODULE, y:y + 6, x:x + 6] = True
        images[i][masks[i, NODULE]] += 0.6
    known = np.ones((24, len(FINDINGS)), bool)
    model = train_segmenter(images, masks, known, SegmenterTraining(epochs=15, seed=0, batch_size=8, learning_rate=1e-2))
    found = segment(model, images)
    assert found.shape == masks.shape
    assert mask_iou(found, masks, ["nodule"])["nodule"]["iou"] > 0.5


def test_segmenter_is_seeded():
    rng = np.random.default_rng(1)
    images = rng.random((8, 16, 16)).astype(np.float32)
    masks = images[:, None].repeat(len(FINDINGS), axis=1) > 0.7
    known = np.ones((8, len(FINDINGS)), bool)
    first, second = (train_segmenter(images, masks, known, SegmenterTraining(epochs=1, seed=4, batch_size=4)) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    with pytest.raises(ValueError, match="no real training image has a lesion mask"):
        train_segmenter(images[:0], masks[:0], known[:0], SegmenterTraining(epochs=1, seed=0))
    with pytest.raises(ValueError, match="no real training image has a lesion mask"):
        train_segmenter(images[:0], masks[:0], known[:0], SegmenterTraining(epochs=1, seed=0))


def test_lesion_crop_and_ssim():
    image = np.zeros((32, 32), np.float32)
    image[10:14, 20:24] = 1.0
    mask = image > 0
    crop = lesion_crop(image, mask)
    assert crop.shape == (CROP_SIZE, CROP_SIZE)
    assert crop[CROP_SIZE // 2, CROP_SIZE // 2] > 0.9 and crop[0, 0] < 0.1  # lesion centred, margin dark
    with pytest.raises(ValueError, match="non-empty mask"):
        lesion_crop(image, np.zeros_like(mask))
    masks = np.zeros((3, len(FINDINGS), 32, 32), bool)
    masks[:2, NODULE] = mask
    crops = lesion_crops(np.stack([image] * 3), masks, "nodule")
    assert crops.shape == (2, CROP_SIZE, CROP_SIZE)
    same = lesion_ssim(crops, crops, seed=0)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-4) and same["ssim_real_vs_real"] == pytest.approx(1.0, abs=1e-4)
    noise = np.random.default_rng(0).random((2, CROP_SIZE, CROP_SIZE)).astype(np.float32)
    assert lesion_ssim(noise, crops, seed=0)["ssim"] < 0.3
    assert lesion_ssim(noise, crops[:0], seed=0)["ssim"] is None
