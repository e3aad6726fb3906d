import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from cxrsynth.tasks import manifest, threads
from cxrsynth.tasks.diffusion import generation
from cxrsynth.tasks.diffusion.labels import label_attributes, read_lesions
from cxrsynth.tasks.diffusion.lesion_masks import inside_share, lung_field_prior, swap_laterality
from cxrsynth.tasks.diffusion.train_stage import MODEL_DIR
from cxrsynth.tasks.findings import FINDINGS, finding_index, patient_side
from cxrsynth.tasks.io import read_mask, read_png16
from cxrsynth.tasks.params import GenerateParams
from tests.diffusion_data import make_project, tiny_diffusion

SETTINGS = GenerateParams(target_share=0.3, max_per_finding=5, steps=2, batch_size=3, guidance_scale=2.0,
                          condition_types=["label+mask+text", "label+mask", "text"])


@pytest.fixture
def project(tmp_path):
    from cxrsynth.tasks.diffusion.train_stage import training_setup
    from cxrsynth.tasks.params import Params

    frame = make_project(tmp_path, n_images=40, size=24, seed=1, lesion_rate=0.15)
    prepared = training_setup(Params(diffusion=tiny_diffusion()), frame, tmp_path)
    prepared.pipeline().save_pretrained(tmp_path / MODEL_DIR)
    return tmp_path, frame, prepared


def _run(root, frame, prepared, settings=SETTINGS):
    counts, requests, maps = generation.plan_for(frame, root, settings, prepared.config)
    generation.prepare_output(root, generation.plan_digest(requests, {"sampler": settings.sampler}))
    # What the generate stage runs, in one part: masks, then the images not on disk yet.
    generation.write_condition_masks(maps, root)
    todo = generation.pending(requests, root)
    generated = generation.sample_part(root / MODEL_DIR, todo, maps, settings, root)
    return counts, requests, maps, generation.run_stats(len(requests), generated, 1.0)


def test_requests_follow_their_templates(project):
    root, frame, prepared = project
    counts, requests, maps = generation.plan_for(frame, root, SETTINGS, prepared.config)
    train = frame[frame["split"] == "train"].set_index("image_id")
    attributes = label_attributes(frame, read_lesions(root)).set_index("image_id")
    assert counts.set_index("finding")["generated"].to_dict() == {
        f: len(requests[requests["finding"] == f]) for f in SETTINGS.rare_findings}
    assert len(requests) > 0 and set(requests["condition_type"]) == set(SETTINGS.condition_types)
    prior = lung_field_prior(read_mask(root / p) for p in train["mask_path"].dropna())
    for _, request in requests.iterrows():
        finding, template = request["finding"], train.loc[request["template_image_id"]]
        assert template[finding] == 1 and request[finding] == 1
        assert finding.replace("_", " ") in request["prompt"]
        side = request[f"{finding}_laterality"]
        if "mask" in request["condition_type"]:
            lesion = ((maps[request["image_id"]] >> finding_index(finding)) & 1).astype(bool)
            assert lesion.any() and inside_share(lesion, prior) >= SETTINGS.mask_inside
            assert request["mask_path"].endswith(f"{request['image_id']}.png")
            assert side == patient_side(np.argwhere(lesion)[:, 1].mean() + 0.5, 24 / 2)  # measured on the mask
        else:
            assert pd.isna(request["mask_path"]) and request["image_id"] not in maps
            reported = attributes.at[request["template_image_id"], f"{finding}_laterality"]
            assert side == (swap_laterality(reported) if request["flipped"] else reported)
        assert side is None or side in request["prompt"]


def test_same_plan_same_requests_whatever_the_run(project):
    root, frame, prepared = project
    _, first, _ = generation.plan_for(frame, root, SETTINGS, prepared.config)
    _, second, _ = generation.plan_for(frame, root, SETTINGS, prepared.config)
    assert first.equals(second)


def test_generation_writes_images_and_resumes(project):
    root, frame, prepared = project
    _, requests, maps, stats = _run(root, frame, prepared)
    assert stats["generated"] == len(requests) and stats["kept"] == 0
    image = read_png16(root / generation.image_path(requests["image_id"].iloc[0]))
    assert image.shape == (24, 24)
    assert sorted(p.stem for p in (root / "data/generate/masks").glob("*.png")) == sorted(maps)
    (root / generation.image_path(requests["image_id"].iloc[-1])).unlink()
    _, _, _, again = _run(root, frame, prepared)
    assert again["generated"] == 1 and again["kept"] == len(requests) - 1
    changed = SETTINGS.model_copy(update={"sampler": "ddim"})
    _, _, _, other = _run(root, frame, prepared, changed)  # another plan: earlier images are not reused
    assert other["generated"] == len(requests)


def test_a_part_takes_its_share_of_the_cpus(project, monkeypatch):
    """Parts sampled at once as threads of one process split its CPUs, rather than each taking all."""
    root, frame, prepared = project
    _, requests, maps = generation.plan_for(frame, root, SETTINGS, prepared.config)
    generation.write_condition_masks(maps, root)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # an in-process Dask worker in an earlier test sets it
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda count: None)  # fixed once per process
    try:
        generation.sample_part(root / MODEL_DIR, requests.iloc[:1], maps, SETTINGS, root,
                               cpu=threads.ThreadRequest(tasks_at_once=4))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_an_adaptive_part_ticks_a_governor_of_its_own_share_after_each_batch(project, monkeypatch):
    root, frame, prepared = project
    _, requests, maps = generation.plan_for(frame, root, SETTINGS, prepared.config)
    generation.write_condition_masks(maps, root)
    ticks: list[int] = []

    class Governor:  # records what the part's loop does with it
        def __init__(self, ceiling: int):
            self.ceiling = ceiling

        def tick(self) -> None:
            ticks.append(self.ceiling)

    monkeypatch.setattr(threads, "ThreadGovernor", Governor)
    two_batches = requests.iloc[:SETTINGS.batch_size + 1]
    generation.sample_part(root / MODEL_DIR, two_batches, maps, SETTINGS, root,
                           cpu=threads.ThreadRequest(torch_threads=1, adaptive=True))
    assert ticks == [1, 1]
    generation.sample_part(root / MODEL_DIR, two_batches, maps, SETTINGS, root, cpu=threads.ThreadRequest(torch_threads=1))
    assert ticks == [1, 1]  # not adaptive: no governor


def test_images_do_not_depend_on_batch_size(project, tmp_path_factory):
    root, frame, prepared = project
    _, requests, _, _ = _run(root, frame, prepared)
    other_root = tmp_path_factory.mktemp("other")
    for path in frame["path"].tolist() + frame["mask_path"].dropna().tolist():
        (other_root / path).parent.mkdir(parents=True, exist_ok=True)
        (other_root / path).write_bytes((root / path).read_bytes())
    shutil.copytree(root / MODEL_DIR, other_root / MODEL_DIR)
    _run(other_root, frame, prepared, SETTINGS.model_copy(update={"batch_size": 5}))
    for image_id in requests["image_id"]:
        a = read_png16(root / generation.image_path(image_id))
        b = read_png16(other_root / generation.image_path(image_id))
        assert np.abs(a - b).max() < 1e-3


def test_synthetic_manifest_records_each_request(project):
    root, frame, prepared = project
    _, requests, maps, _ = _run(root, frame, prepared)
    synthetic = generation.synthetic_manifest(requests, 24, "abc123", SETTINGS)
    written = manifest.write(synthetic, root / "data/generate/manifest.parquet", "generate")
    assert (written["source"] == "synthetic").all() and (written["split"] == "train").all()
    assert written["patient_id"].isna().all() and written["report"].isna().all()
    assert (written["sampler"] == SETTINGS.sampler).all() and (written["steps"] == SETTINGS.steps).all()
    assert (written["guidance_scale"] == SETTINGS.guidance_scale).all() and (written["checkpoint_digest"] == "abc123").all()
    assert written["seed"].tolist() == requests["seed"].tolist()
    assert written["template_image_id"].isin(frame.loc[frame["split"] == "train", "image_id"]).all()
    for f in FINDINGS:
        assert written[f].astype("Float64").equals(requests[f].astype("Float64").reset_index(drop=True))
    has_mask = written["condition_type"].str.contains("mask")
    assert written.loc[has_mask, "mask_path"].notna().all() and written.loc[~has_mask, "mask_path"].isna().all()
    assert (written.loc[has_mask, "n_lesions"] >= 1).all()
    for path in written["path"]:
        assert (root / path).exists()
    again = manifest.read(root / "data/generate/manifest.parquet")
    assert again["prompt"].tolist() == requests["prompt"].tolist()


def test_grids_and_metrics(project):
    root, frame, prepared = project
    counts, requests, maps, stats = _run(root, frame, prepared)
    grids = generation.write_grids(requests, maps, root)
    names = {p.name for p in grids}
    assert {"finding_nodule.png", "finding_pneumothorax.png", "condition_label_mask_text.png"} <= names
    metrics = generation.generation_metrics(counts, requests, stats)
    assert metrics["planned"] == len(requests) and sum(metrics["per_condition_type"].values()) == len(requests)


def test_findings_without_mask_templates_use_the_other_condition_types(project):
    root, frame, prepared = project
    no_masks = frame.assign(mask_path=None)
    pools = generation.templates(no_masks[no_masks["split"] == "train"], {}, ["nodule"], ["nodule"])
    assert pools["nodule"]["masked"] == [] and pools["nodule"]["positive"]
    settings = SETTINGS.model_copy(update={"condition_types": ["label+mask", "text"]})
    counts, requests, maps = generation.plan_for(no_masks, root, settings, prepared.config)
    assert len(requests) > 0 and (requests["condition_type"] == "text").all() and maps == {}
    assert set(counts["condition_types"]) == {"text"}
    mask_types_only = SETTINGS.model_copy(update={"condition_types": ["label+mask", "mask+text"]})
    counts, fallback, _ = generation.plan_for(no_masks, root, mask_types_only, prepared.config)
    assert len(fallback) > 0 and (fallback["condition_type"] == "label+text").all()  # unmasked_condition_types
    assert set(counts["condition_types"]) == {"label+text"}
    no_fallback = mask_types_only.model_copy(update={"unmasked_condition_types": []})
    _, nothing, _ = generation.plan_for(no_masks, root, no_fallback, prepared.config)
    assert len(nothing) == 0


def test_condition_types_the_model_lacks_are_refused():
    with pytest.raises(ValueError, match="generate.condition_types: 'label\\+mask' needs the mask condition"):
        generation.check_condition_types(["label+mask"], ["label", "text"])
    generation.check_condition_types(["label+text"], ["label", "text"])


def test_an_empty_plan_writes_an_empty_manifest(project):
    root, frame, prepared = project
    settings = SETTINGS.model_copy(update={"target_share": 0.01})
    counts, requests, maps, stats = _run(root, frame, prepared, settings)
    assert len(requests) == 0 and stats["generated"] == 0 and (counts["generated"] == 0).all()
    written = manifest.write(generation.synthetic_manifest(requests, 24, "d", settings),
                             root / "data/generate/manifest.parquet", "generate")
    assert len(written) == 0
    assert generation.generation_metrics(counts, requests, stats)["planned"] == 0
