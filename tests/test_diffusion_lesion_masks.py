import numpy as np
import pytest

from cxrsynth.tasks.diffusion.lesion_masks import (
    IDENTITY,
    Jitter,
    inside_share,
    jitter_mask,
    lung_field_prior,
    mirror,
    replace_channel,
    swap_laterality,
    transform_mask,
)
from cxrsynth.tasks.findings import finding_index
from cxrsynth.tasks.masks import labelmap
from tests.diffusion_data import lungs


def _disk(size, cy, cx, r):
    y, x = np.mgrid[0:size, 0:size]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r**2


def _label_map(mask, finding="nodule"):
    return labelmap.encode({finding: mask}, mask.shape)


def test_prior_is_the_mirrored_union_of_lung_lesions_closed():
    size = 32
    maps = [_label_map(_disk(size, 10, 8, 2)), _label_map(_disk(size, 14, 9, 2), "pneumothorax"),
            _label_map(_disk(size, 20, 16, 3), "cardiomegaly")]  # the heart does not count
    prior = lung_field_prior(maps)
    assert prior[10, 8] and prior[10, size - 1 - 8] and prior[12, 8]  # gap between two lesions closed
    assert not prior[20, 16]
    assert (prior == prior[:, ::-1]).all()


def test_prior_without_lung_lesions_is_an_error():
    with pytest.raises(ValueError, match="no lung lesion masks"):
        lung_field_prior([_label_map(_disk(16, 8, 8, 2), "cardiomegaly")])


def test_transform_scales_about_the_centroid_shifts_and_flips():
    mask = _disk(32, 12, 10, 3)
    bigger = transform_mask(mask, Jitter(0, 0, 1.5, False))
    assert 1.8 < bigger.sum() / mask.sum() < 2.7
    shifted = transform_mask(mask, Jitter(4, -3, 1.0, False))
    assert np.allclose(np.argwhere(shifted).mean(axis=0) - np.argwhere(mask).mean(axis=0), [4, -3])
    flipped = transform_mask(mask, Jitter(0, 0, 1.0, True))
    assert (flipped == mask[:, ::-1]).all()
    assert (transform_mask(mask, IDENTITY) == mask).all()


def test_jitter_stays_inside_the_lungs_and_moves_the_lesion():
    size = 48
    right, left = lungs(size)
    prior = right | left
    mask = _disk(size, 20, 15, 3) & right
    rng = np.random.default_rng(0)
    moved_any = flipped_any = False
    for _ in range(40):
        moved, jitter = jitter_mask(mask, prior, rng, max_shift=0.15, scale_range=(0.7, 1.4), flip=True, inside=0.95)
        assert moved.any() and inside_share(moved, prior) >= 0.95
        moved_any |= jitter.moved and not (moved == mask).all()
        flipped_any |= jitter.flip
        if jitter.flip:
            assert inside_share(moved, left) > 0.5  # a flip puts it in the other lung
    assert moved_any and flipped_any


def test_jitter_falls_back_to_the_real_mask_when_nothing_fits():
    mask = _disk(32, 16, 16, 4)
    prior = mask.copy()  # no room to move
    moved, jitter = jitter_mask(mask, prior, np.random.default_rng(0), 0.4, (2.0, 3.0), False, 0.99)
    assert jitter == IDENTITY and (moved == mask).all()


def test_label_map_helpers():
    base = _label_map(_disk(16, 4, 4, 2), "pleural_effusion")
    nodule = _disk(16, 10, 10, 2)
    combined = replace_channel(base, "nodule", nodule)
    assert ((combined >> finding_index("nodule") & 1) == nodule).all()
    assert ((combined >> finding_index("pleural_effusion") & 1) == (base > 0)).all()
    assert (mirror(combined) == combined[:, ::-1]).all()
    assert swap_laterality("left") == "right" and swap_laterality("bilateral") == "bilateral"
    assert swap_laterality(None) is None
