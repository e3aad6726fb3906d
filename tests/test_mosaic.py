import numpy as np
import pytest

from cxrsynth.tasks.mosaic import mosaic


def test_tiles_fill_rows_in_order_with_padding_and_background():
    tiles = [np.full((2, 3), value, np.float32) for value in (1, 2, 3)]
    grid = mosaic(tiles, columns=2, pad=1, fill=-1)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1) and grid.dtype == np.float32
    assert (grid[1:3, 1:4] == 1).all() and (grid[1:3, 5:8] == 2).all() and (grid[4:6, 1:4] == 3).all()
    assert (grid[4:6, 5:8] == -1).all()  # the empty last place
    assert (grid[0] == -1).all() and (grid[:, 4] == -1).all() and (grid[3] == -1).all()


def test_colour_tiles_and_no_padding():
    tiles = [np.full((4, 4, 3), value, np.uint8) for value in range(5)]
    grid = mosaic(tiles, columns=3)
    assert grid.shape == (8, 12, 3) and grid.dtype == np.uint8
    for index in range(5):
        top, left = divmod(index, 3)
        assert (grid[top * 4:(top + 1) * 4, left * 4:(left + 1) * 4] == index).all()


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no images"):
        mosaic([], columns=2)
    with pytest.raises(ValueError, match="columns must be at least 1"):
        mosaic([np.zeros((2, 2))], columns=0)
    with pytest.raises(ValueError, match=r"tile 1 has shape \(3, 2\), the first \(2, 2\)"):
        mosaic([np.zeros((2, 2)), np.zeros((3, 2))], columns=2)
