import os

import numpy as np
import pytest

from cxrsynth.tasks.io import atomic_path, read_png16, write_png16, write_text


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
