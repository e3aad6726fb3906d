import numpy as np
import pandas as pd
import pytest

from cxrsynth.tasks.masks.rle import decode_rle, encode_rle


def test_column_major_with_relative_starts():
    mask = decode_rle("1 1 2 2", 3, 2)  # pixel 1, skip 2, pixels 4-5 (down column 0, then column 1)
    expected = np.zeros((3, 2), bool)
    expected[1, 0] = True
    expected[1:3, 1] = True
    np.testing.assert_array_equal(mask, expected)
    assert encode_rle(expected) == "1 1 2 2"


def test_round_trip_on_random_non_square_masks():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((17, 11)) < 0.3
        np.testing.assert_array_equal(decode_rle(encode_rle(mask), 17, 11), mask)
    full = np.ones((4, 3), bool)  # a run reaching the last pixel
    np.testing.assert_array_equal(decode_rle(encode_rle(full), 4, 3), full)


def test_no_lesion_is_an_empty_mask():
    assert not decode_rle("-1", 8, 8).any() and not decode_rle(" ", 8, 8).any()
    assert encode_rle(np.zeros((8, 8))) == "-1"


@pytest.mark.parametrize(
    "rle, message",
    [("60 10", "64 pixels"), ("1 2 3", "odd number"), ("1 x", "not an integer"), ("3 0", "length 0"), ("-2 4", "negative")],
)
def test_bad_rle_is_a_clear_error(rle, message):
    with pytest.raises(ValueError, match=message):
        decode_rle(rle, 8, 8)


def test_real_siim_rows(shared_data):
    table = pd.read_csv(shared_data / "formats" / "siim-pneumothorax-train-rle.head300.csv", dtype=str, skipinitialspace=True)
    table.columns = [c.strip() for c in table.columns]
    centroids = []
    for rle in table["EncodedPixels"].str.strip():
        mask = decode_rle(rle, 1024, 1024)
        assert encode_rle(mask) == rle  # the challenge's own strings survive a round trip exactly
        if mask.any():
            centroids.append(np.nonzero(mask)[1].mean())
    assert len(centroids) == (table["EncodedPixels"].str.strip() != "-1").sum() > 50
    # Read column-major, pneumothoraces lie in both lungs on either side of the midline; read
    # row-major (transposed) nearly all would fall on one side.
    centroids = np.array(centroids)
    assert (centroids < 448).mean() > 0.25 and (centroids > 576).mean() > 0.25
