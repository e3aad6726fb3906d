import numpy as np
from PIL import Image

from cxrsynth.tasks.diffusion.grids import LABEL_WIDTH, MIN_TILE, RED, outlined, pairs, tile, write_rgb
from cxrsynth.tasks.diffusion.previews import UNCONDITIONAL, condition_types, preview_grid, preview_indices
from tests.diffusion_data import tiny_diffusion, tiny_setup


def test_outline_marks_the_lesion_border_in_red():
    image = np.full((8, 8), 0.5, np.float32)
    label_map = np.zeros((8, 8), np.uint8)
    label_map[2:6, 2:6] = 8
    rgb = outlined(image, label_map)
    assert (rgb[2, 2] == RED).all() and (rgb[3, 3] == 127).all() and (rgb[0, 0] == 127).all()
    assert (outlined(image) == 127).all()


def test_tile_lays_out_enlarged_tiles(tmp_path):
    tiles = pairs([np.zeros((16, 16))] * 3, [None, np.ones((16, 16), np.uint8), None])
    grid = tile(tiles, columns=4)
    assert len(tiles) == 6 and grid.shape == (2 * (MIN_TILE + 2) + 2, 4 * (MIN_TILE + 2) + 2, 3)
    write_rgb(tmp_path / "grid.png", grid)
    assert Image.open(tmp_path / "grid.png").size == (grid.shape[1], grid.shape[0])


def test_condition_types_follow_the_model_conditions():
    assert condition_types(["label", "mask", "text"]) == [
        "label", "mask", "text", "label+mask", "label+text", "mask+text", "label+mask+text"]
    assert condition_types(["mask", "text"]) == ["mask", "text", "mask+text"]


def test_preview_grid_has_a_row_per_condition_type(tmp_path):
    _, prepared = tiny_setup(tmp_path, tiny_diffusion(("label", "mask")))
    indices = preview_indices(prepared.dataset, 3)
    assert len(indices) == 3 and len(set(indices)) == 3
    first = prepared.dataset[indices[0]]
    assert first["mask_known"] and first["masks"].any()
    grid = preview_grid(prepared.pipeline(), prepared.dataset, indices, steps=2, guidance_scale=2.0)
    rows = 1 + len(condition_types(["label", "mask"])) + len([UNCONDITIONAL])
    assert grid.shape[0] == rows * (MIN_TILE + 2) + 2 and grid.shape[1] == LABEL_WIDTH + 3 * (MIN_TILE + 2) + 2
