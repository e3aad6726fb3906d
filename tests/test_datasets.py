import numpy as np
import pandas as pd
import pytest

from cxrsynth.tasks.datasets import ManifestImages
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import read_mask, write_mask, write_png16
from cxrsynth.tasks.masks import labelmap


def test_label_map_roundtrip_keeps_overlaps():
    effusion = np.zeros((8, 8), bool); effusion[4:, :] = True
    atelectasis = np.zeros((8, 8), bool); atelectasis[3:6, 2:5] = True
    stack = labelmap.decode(labelmap.encode({"pleural_effusion": effusion, "atelectasis": atelectasis}, (8, 8)))
    assert stack.shape == (len(FINDINGS), 8, 8)
    assert (stack[FINDINGS.index("pleural_effusion")] == effusion).all()
    assert (stack[FINDINGS.index("atelectasis")] == atelectasis).all()
    assert stack[FINDINGS.index("nodule")].sum() == 0


def test_label_map_refuses_wrong_shape():
    with pytest.raises(ValueError, match="nodule mask has shape"):
        labelmap.encode({"nodule": np.zeros((4, 4))}, (8, 8))


def test_dataset_item(tmp_path):
    write_png16(tmp_path / "a.png", np.full((16, 16), 0.5, np.float32))
    nodule = np.zeros((16, 16), bool); nodule[2:4, 2:4] = True
    write_mask(tmp_path / "a_mask.png", labelmap.encode({"nodule": nodule}, (16, 16)))
    frame = pd.DataFrame({"path": ["a.png", "a.png"], "mask_path": ["a_mask.png", None],
                          **{f: pd.array([1 if f == "nodule" else None, 0], dtype="Int8") for f in FINDINGS}})
    data = ManifestImages(frame, tmp_path)
    first, second = data[0], data[1]
    assert first["image"].shape == (1, 16, 16) and abs(first["image"].mean().item() - 0.5) < 1e-4
    assert first["mask"][FINDINGS.index("nodule")].sum().item() == 4 and first["has_mask"].item()
    assert second["mask"].sum().item() == 0 and not second["has_mask"].item()
    assert first["labels"][FINDINGS.index("nodule")].item() == 1
    assert np.isnan(first["labels"][0].item()) and second["labels"][0].item() == 0
    assert read_mask(tmp_path / "a_mask.png").dtype == np.uint8

