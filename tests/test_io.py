import io
import os
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cxrsynth.tasks.io import (
    PNG16_MAX, atomic_path, encode_png16, read_png16, to_uint16, write_csv, write_parquet, write_png16, write_text,
)


def test_png16_roundtrip_precision(tmp_path):
    image = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    write_png16(tmp_path / "a.png", image)
    assert np.abs(read_png16(tmp_path / "a.png") - image).max() < 1e-4


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as temp:
            temp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_writes_follow_the_umask_in_force(tmp_path):
    previous = os.umask(0o077)
    try:
        write_png16(tmp_path / "deep" / "folder" / "a.png", np.zeros((2, 2), np.float32))  # folders made as needed
    finally:
        os.umask(previous)
    assert (tmp_path / "deep" / "folder" / "a.png").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "deep" / "folder").iterdir()] == ["a.png"]  # no temporary file left


def _frame():
    return pd.DataFrame({"image_id": ["img-000002", "img-000001"], "lesion": [0, 3], "value": [0.5, None]}, index=[7, 4])


def test_parquet_is_written_without_the_index_as_pandas_writes_it(tmp_path):
    frame = _frame()
    write_parquet(tmp_path / "a.parquet", frame)
    frame.to_parquet(tmp_path / "pandas.parquet", index=False)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "pandas.parquet").read_bytes()
    back = pd.read_parquet(tmp_path / "a.parquet")
    assert back.index.tolist() == [0, 1] and back["image_id"].tolist() == ["img-000002", "img-000001"]


def test_parquet_with_a_schema_has_exactly_that_schema(tmp_path):
    schema = pa.schema([("image_id", pa.string()), ("lesion", pa.int8()), ("value", pa.float32())])
    write_parquet(tmp_path / "a.parquet", _frame(), schema)
    table = pq.read_table(tmp_path / "a.parquet")
    assert table.schema.remove_metadata() == schema and table.column("lesion").to_pylist() == [0, 3]


def test_a_parquet_that_cannot_be_written_keeps_the_old_file(tmp_path):
    write_parquet(tmp_path / "a.parquet", _frame())
    before = (tmp_path / "a.parquet").read_bytes()
    wrong = pa.schema([("image_id", pa.int64()), ("lesion", pa.int8()), ("value", pa.float32())])
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_parquet(tmp_path / "a.parquet", _frame(), wrong)
    assert (tmp_path / "a.parquet").read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["a.parquet"]


def test_csv_is_written_without_the_index(tmp_path):
    write_csv(tmp_path / "sub" / "a.csv", _frame())
    assert (tmp_path / "sub" / "a.csv").read_text() == "image_id,lesion,value\nimg-000002,0,0.5\nimg-000001,3,\n"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.csv"]


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (3, 5), (64, 64), (37, 100)])
def test_png16_encoder_is_lossless_as_pillow_reads_it(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, PNG16_MAX + 1, shape, dtype=np.uint16)
    pixels[0, 0], pixels[-1, -1] = 0, PNG16_MAX  # both ends of the range
    with Image.open(io.BytesIO(encode_png16(pixels))) as image:
        assert (image.mode, image.size) == ("I;16", (shape[1], shape[0]))
        assert np.array_equal(np.asarray(image), pixels)


@pytest.mark.parametrize("level, strategy", [(0, zlib.Z_DEFAULT_STRATEGY), (6, zlib.Z_DEFAULT_STRATEGY), (9, zlib.Z_FILTERED)])
def test_png16_encoder_settings_change_size_not_pixels(level, strategy):
    rows, columns = np.mgrid[0:48, 0:40]
    pixels = (rows * 1000 + columns * 7).astype(np.uint16)  # smooth: every setting but level 0 compresses it
    encoded = encode_png16(pixels, level, strategy)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded))), pixels)
    assert (len(encoded) > pixels.nbytes) == (level == 0)


def test_png16_writes_padding_runs_compactly(tmp_path):
    image = np.zeros((128, 128), np.float32)
    image[:, 32:96] = np.random.default_rng(0).random((128, 64))  # noise between zero-padded bands
    write_png16(tmp_path / "a.png", image)
    # Half is zeros, the noise does not compress: runs of zeros must cost next to nothing (Huffman alone: 0.63)
    assert (tmp_path / "a.png").stat().st_size < 0.55 * image.size * 2
    assert np.array_equal(read_png16(tmp_path / "a.png"), to_uint16(image) / np.float32(PNG16_MAX))


@pytest.mark.parametrize("pixels", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 1), np.uint16), np.zeros((0, 4), np.uint16)])
def test_png16_encoder_refuses_what_is_not_a_uint16_image(pixels):
    with pytest.raises(ValueError, match="2-D uint16"):
        encode_png16(pixels)


def test_write_json_sorts_keys_unless_told_to_keep_their_order(tmp_path):
    import json

    from cxrsynth.tasks.io import write_json

    write_json(tmp_path / "sorted.json", {"b": 1, "a": {"d": 2, "c": 3}})
    write_json(tmp_path / "kept.json", {"b": 1, "a": {"d": 2, "c": 3}}, sort_keys=False)
    assert list(json.loads((tmp_path / "sorted.json").read_text())) == ["a", "b"]
    kept = json.loads((tmp_path / "kept.json").read_text())
    assert list(kept) == ["b", "a"] and list(kept["a"]) == ["d", "c"]
