import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxrsynth.tasks.io import atomic_path, read_png16, write_csv, write_parquet, write_png16, write_text


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
