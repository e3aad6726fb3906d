import numpy as np
import pytest

from cxrsynth.tasks.masks.geometry import fit
from cxrsynth.tasks.sources.geometry import fit_square


def test_placement_keeps_aspect_and_centres():
    where = fit(100, 50, 64)
    assert (where.scale, *where.content_shape, where.pad_top, where.pad_left) == (0.64, 64, 32, 0, 16)
    wide = fit(30, 120, 32)
    assert (*wide.content_shape, wide.pad_top, wide.pad_left) == (8, 32, 12, 0)
    with pytest.raises(ValueError):
        fit(0, 10, 32)


def test_fit_square_pads_with_zeros_and_stays_in_range():
    image = np.full((100, 50), 0.8, np.float32)
    square, where = fit_square(image, 64)
    assert square.shape == (64, 64) and square.dtype == np.float32
    assert (square[:, : where.pad_left] == 0).all() and (square[:, where.pad_left + where.content_shape[1] :] == 0).all()
    np.testing.assert_allclose(square[:, where.pad_left : where.pad_left + where.content_shape[1]], 0.8, atol=1e-5)


def test_source_coordinates_map_with_scale_and_pad():
    image = np.zeros((200, 100), np.float32)
    image[150:160, 20:30] = 1.0  # a block whose centre is at x=25, y=155 (pixel centres at +0.5)
    square, where = fit_square(image, 64)
    y, x = where.to_working(155.0, 25.0)
    rows, columns = np.nonzero(square > 0.5)
    assert abs(columns.mean() + 0.5 - x) < 0.6 and abs(rows.mean() + 0.5 - y) < 0.6


def test_downscaling_is_anti_aliased():
    checker = (np.indices((256, 256)).sum(axis=0) % 2).astype(np.float32)  # 1-pixel checkerboard
    square, _ = fit_square(checker, 64)
    assert square.mean() == pytest.approx(0.5, abs=0.02)
    assert square.std() < 0.02  # point sampling would give pure 0 or 1


def test_small_images_are_upscaled():
    square, where = fit_square(np.eye(8, dtype=np.float32), 32)
    assert where.scale == 4 and square.shape == (32, 32) and 0 <= square.min() and square.max() <= 1
