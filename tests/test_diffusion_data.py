import numpy as np
import pandas as pd
import pytest
import torch

from cxrsynth.models.conditioning import LATERALITY_INDEX, SEVERITY_INDEX, STATE_INDEX
from cxrsynth.tasks.diffusion.data import (
    DiffusionDataset,
    StepBatches,
    batch_conditions,
    condition_keep,
    masks_complete,
    readable_rows,
    texts_of,
    training_rows,
)
from cxrsynth.tasks.diffusion.labels import attribute_indices, label_attributes, read_lesions, state_indices
from cxrsynth.tasks.diffusion.tokenizer import WordTokenizer
from cxrsynth.tasks.findings import FINDINGS
from tests.diffusion_data import make_project

NODULE = FINDINGS.index("nodule")


def test_training_rows_are_real_train_images_only():
    frame = pd.DataFrame({"split": ["train", "val", "train", "test"], "source": ["real", "real", "synthetic", "real"]})
    assert len(training_rows(frame)) == 1
    with pytest.raises(ValueError, match="no real images in the train split"):
        training_rows(frame.iloc[1:])


def test_texts_of_names_a_missing_column():
    assert texts_of(pd.DataFrame({"prompt": ["a", None]}), "prompt") == ["a", None]
    with pytest.raises(ValueError, match="no 'report' column"):
        texts_of(pd.DataFrame({"prompt": ["a"]}), "report")


def _label_frame():
    frame = pd.DataFrame({"image_id": ["a", "b"], "orig_height": 16, "orig_width": 16, "scale": 1.0,
                          **{f: pd.array([None, None], dtype="Int8") for f in FINDINGS},
                          **{f"{f}_{a}": [None, None] for f in FINDINGS for a in ("laterality", "location", "severity")}})
    frame["nodule"] = pd.array([1, -1], dtype="Int8")
    frame["cardiomegaly"] = pd.array([0, None], dtype="Int8")
    frame.loc[0, "nodule_laterality"], frame.loc[0, "nodule_severity"] = "left", "severe"
    return frame


def test_label_indices_from_states_and_attributes():
    frame = _label_frame()
    states = state_indices(frame)
    assert states[0, NODULE] == STATE_INDEX[1] and states[1, NODULE] == STATE_INDEX[-1]
    assert states[0, 0] == STATE_INDEX[0] and states[1, 0] == STATE_INDEX[None]
    attributes = attribute_indices(label_attributes(frame, read_lesions("/nonexistent")))
    assert attributes["laterality"][0, NODULE] == LATERALITY_INDEX["left"]
    assert attributes["severity"][0, NODULE] == SEVERITY_INDEX["severe"]
    assert attributes["laterality"][1, NODULE] == 0 and attributes["severity"][1, 0] == 0
    with pytest.raises(ValueError, match="lacks the attribute columns"):
        label_attributes(frame.drop(columns=["nodule_severity"]), read_lesions("/nonexistent"))


def test_masks_fill_the_attributes_reports_leave_out(tmp_path):
    frame = make_project(tmp_path, n_images=30, size=32, seed=2)
    lesions = read_lesions(tmp_path)
    attributes = label_attributes(frame, lesions)
    masked = lesions.drop_duplicates(["image_id", "finding"]).set_index(["image_id", "finding"])
    filled = 0
    for index, row in frame.iterrows():
        for finding in ("nodule", "pneumothorax"):
            if (row["image_id"], finding) not in masked.index or row[finding] != 1:
                continue
            reported = row[f"{finding}_laterality"]
            from_mask = masked.loc[(row["image_id"], finding)]
            expected = from_mask["laterality"] if pd.isna(reported) else reported
            assert attributes.at[index, f"{finding}_laterality"] == expected
            assert attributes.at[index, f"{finding}_location"] == from_mask["zone"]
            filled += bool(pd.isna(reported))
    assert filled > 0  # some lateralities came from the masks alone


def test_masks_complete_needs_every_present_maskable_finding_masked():
    masks = torch.zeros(len(FINDINGS), 4, 4, dtype=torch.uint8)
    states = torch.full((len(FINDINGS),), STATE_INDEX[0])
    maskable = torch.tensor([f != "cardiomegaly" for f in FINDINGS])
    assert masks_complete(masks, states, maskable)  # nothing present: the empty mask is the truth
    states[NODULE] = STATE_INDEX[1]
    states[0] = STATE_INDEX[1]  # cardiomegaly: never masked in this data set, does not count
    assert not masks_complete(masks, states, maskable)
    masks[NODULE, 1, 1] = 1
    assert masks_complete(masks, states, maskable)


def test_dataset_items_and_batch_conditions(tmp_path):
    frame = training_rows(make_project(tmp_path, n_images=12, size=16))
    tokenizer = WordTokenizer.build(frame["prompt"], 1, 10)
    dataset = DiffusionDataset(frame, tmp_path, tokenizer, lesions=read_lesions(tmp_path))
    item = dataset[0]
    assert item["image"].shape == (1, 16, 16) and -1 <= item["image"].min() and item["image"].max() <= 1
    assert item["masks"].shape == (len(FINDINGS), 16, 16) and item["text_present"]
    assert dataset.maskable == ["pleural_effusion", "pneumothorax", "nodule"]  # the toy data never masks hearts
    for index in range(len(dataset)):
        has_mask = pd.notna(frame.at[index, "mask_path"])
        lesion = bool((dataset.states[index][dataset.maskable_flags] == STATE_INDEX[1]).any())
        assert bool(dataset[index]["mask_known"]) == (has_mask or not lesion)
    assert dataset.pixels(0)[0] is dataset.pixels(0)[0]  # cached
    batch = torch.utils.data.default_collate([dataset[i] for i in range(4)])
    cond = batch_conditions(batch)
    assert len(cond) == 4 and cond.keep_label.all() and torch.equal(cond.keep_mask, batch["mask_known"])


def test_condition_dropout_is_independent_per_condition_at_its_rate():
    keep = condition_keep(40000, {"label": 0.2, "mask": 0.5, "text": 0.0}, torch.Generator().manual_seed(0))
    assert abs(keep["label"].float().mean() - 0.8) < 0.01
    assert abs(keep["mask"].float().mean() - 0.5) < 0.01
    assert keep["text"].all()
    both_dropped = (~keep["label"] & ~keep["mask"]).float().mean()
    assert abs(both_dropped - 0.2 * 0.5) < 0.01


def test_step_batches_depend_only_on_seed_and_step():
    full = list(StepBatches(10, 4, seed=3, start=0, stop=7))
    resumed = list(StepBatches(10, 4, seed=3, start=4, stop=7))
    assert resumed == full[4:] and len(full) == 7
    first_epoch = np.concatenate(full[:2])
    assert len(set(first_epoch.tolist())) == 8  # no repeats within an epoch
    assert list(StepBatches(10, 4, seed=4, start=0, stop=1))[0] != full[0]
    assert len(list(StepBatches(3, 5, seed=0, start=0, stop=2))[0]) == 5  # a set smaller than a batch is tiled


def test_unreadable_images_are_quarantined_without_file_names(tmp_path):
    frame = make_project(tmp_path, n_images=6, size=16)
    (tmp_path / frame.at[1, "path"]).write_bytes(b"not a png")
    (tmp_path / frame.at[2, "path"]).unlink()
    good, quarantined = readable_rows(frame, tmp_path)
    assert good["image_id"].tolist() == [frame.at[i, "image_id"] for i in (0, 3, 4, 5)]
    assert [q["image_id"] for q in quarantined] == [frame.at[1, "image_id"], frame.at[2, "image_id"]]
    assert all(".png" not in q["reason"] for q in quarantined)
