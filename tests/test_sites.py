import pandas as pd
import pytest

from cxrsynth.tasks import mixing
from cxrsynth.tasks.ingest.outputs import site_counts
from cxrsynth.tasks.params import ParamsError, parse_params
from cxrsynth.tasks.sites import check_train_sites, sites_in, training_sites_only


def _frame() -> pd.DataFrame:
    """Two sites and a row without one, in every split, plus a synthetic training row."""
    rows = []
    for split in ("train", "val", "test"):
        for site in ("site-1", "site-2", None):
            rows.append({"image_id": f"{split}-{site}", "split": split, "source": "real", "site": site})
    rows.append({"image_id": "syn-1", "split": "train", "source": "synthetic", "site": None})
    return pd.DataFrame(rows).astype({"site": "string"})


def test_sites_in_lists_named_sites_only():
    assert sites_in(_frame()) == ["site-1", "site-2"]
    assert sites_in(pd.DataFrame({"split": ["train"]})) == []


def test_no_train_sites_keeps_every_row():
    frame = _frame()
    assert training_sites_only(frame, None) is frame


def test_train_sites_filter_training_and_validation_rows_and_leave_test_untouched():
    kept = training_sites_only(_frame(), ["site-1"])
    assert kept.loc[kept["split"] == "train", "image_id"].tolist() == ["train-site-1", "syn-1"]
    assert kept.loc[kept["split"] == "val", "image_id"].tolist() == ["val-site-1"]
    assert kept.loc[kept["split"] == "test", "image_id"].tolist() == ["test-site-1", "test-site-2", "test-None"]


def test_an_unknown_site_is_refused_naming_the_key_and_the_sites_the_data_has():
    with pytest.raises(ValueError, match=r"evaluate\.train_sites: 'SITE-A' not among .* the data has: site-1, site-2"):
        training_sites_only(_frame(), ["site-1", "SITE-A"])


def test_a_site_seen_only_in_test_cannot_train():
    frame = _frame()
    frame.loc[frame["split"] == "test", "site"] = "site-3"
    with pytest.raises(ValueError, match="'site-3' not among"):
        check_train_sites(frame, ["site-3"])


def test_a_source_without_sites_says_so():
    frame = _frame().assign(site=pd.NA)
    with pytest.raises(ValueError, match="the source records no acquisition site"):
        training_sites_only(frame, ["site-1"])


def test_mix_variants_start_from_the_training_sites_rows():
    """What flows/mix.py does: the real train and val rows, then the site filter; no test row remains."""
    frame = _frame()
    real = training_sites_only(mixing.real_rows(frame[frame["source"] == "real"], "manifest"), ["site-2"])
    assert real["image_id"].tolist() == ["train-site-2", "val-site-2"]


@pytest.mark.parametrize("value, message", [
    ([], "an empty list trains on nothing"),
    (["site-1", "site-1"], "names a site twice"),
])
def test_train_sites_param_refuses_empty_and_repeated_lists(value, message):
    with pytest.raises(ParamsError, match=rf"evaluate\.train_sites: .*{message}"):
        parse_params({"evaluate": {"train_sites": value}})


def test_train_sites_param_defaults_to_every_site():
    assert parse_params({}).evaluate.train_sites is None
    assert parse_params({"evaluate": {"train_sites": ["site-2"]}}).evaluate.train_sites == ["site-2"]


def test_ingest_metrics_count_images_per_site_and_split():
    frame = _frame()
    frame = frame[frame["source"] == "real"]
    assert site_counts(frame) == {"site-1": {"train": 1, "val": 1, "test": 1}, "site-2": {"train": 1, "val": 1, "test": 1}}


def test_the_diffusion_model_trains_on_the_training_sites_only(tmp_path):
    from cxrsynth.tasks.diffusion.train_stage import training_setup
    from cxrsynth.tasks.params import EvaluateParams, Params
    from tests.diffusion_data import make_project, tiny_diffusion

    frame = make_project(tmp_path, n_images=16, size=16, seed=0)
    frame["site"] = ["SITE-A", "SITE-B"] * 8
    params = Params(diffusion=tiny_diffusion(), evaluate=EvaluateParams(train_sites=["SITE-B"]))
    prepared = training_setup(params, frame, tmp_path)
    expected = frame[(frame["split"] == "train") & (frame["site"] == "SITE-B")]
    assert 0 < len(prepared.dataset) == len(expected) < (frame["split"] == "train").sum()


@pytest.mark.slow
def test_mix_flow_trains_every_variant_on_the_training_sites_only(tmp_path, blob_project):
    from cxrsynth.flows.mix import mix_flow
    from cxrsynth.tasks import manifest
    from tests.blob_project import real_frame, synthetic_frame

    real = real_frame({"train": 20, "val": 6, "test": 6})
    real["site"] = ["site-1", "site-2"] * 16
    blob_project(real, synthetic_frame({"nodule": 8}), evaluate={"train_sites": ["site-2"]},
                 mix={"baselines": ["real_only", "classical_aug", "class_weighted"]})  # no reserve here: no ceiling
    mix_flow("params.yaml", variant="baselines")
    mix_flow("params.yaml", variant="ratio_1")
    for path in ("data/mix/baselines/real_only.parquet", "data/mix/ratio_1.parquet"):
        variant = manifest.read(tmp_path / path)
        real_rows = variant[variant["source"] == "real"]
        assert set(real_rows["site"]) == {"site-2"} and set(real_rows["split"]) == {"train", "val"}
        assert len(real_rows) == 13  # 10 of the 20 training and 3 of the 6 validation images
    ratio = manifest.read(tmp_path / "data/mix/ratio_1.parquet")
    site_2_train = real[(real["split"] == "train") & (real["site"] == "site-2")]
    assert (ratio["source"] == "synthetic").sum() == min(int(site_2_train["nodule"].eq(1).sum()), 8)


def test_phantom_images_reach_the_manifest_with_a_pseudonymised_site(tmp_path):
    """The phantom writes each study's site as the DICOM InstitutionName; ingest reads it back and
    pseudonymises it, so the manifest's site column names site-1 and site-2."""
    from cxrsynth.tasks import deid
    from cxrsynth.tasks.ingest import images, outputs, select
    from cxrsynth.tasks.params import PhantomParams
    from cxrsynth.tasks.sources.phantom.collection import read_phantom
    from cxrsynth.tasks.sources.phantom.study import SITES
    from cxrsynth.tasks.sources.phantom.writer import generate_patients, write_tables

    config = PhantomParams(n_patients=8, size=32)
    write_tables(generate_patients(config, range(8), tmp_path), tmp_path)
    records = read_phantom(tmp_path)
    pseudonyms = select.pseudonymise(records)
    results = {p.image_id: images.process_item(images.WorkItem(p.image_id, r.image_path), 16, tmp_path / "out")
               for r, p in zip(records, pseudonyms)}
    header_sites = [results[p.image_id].site for p in pseudonyms]
    named = deid.deidentify(records, header_sites)
    frame = outputs.manifest_frame(named, pseudonyms, results, "phantom", {"train": 0.5, "val": 0.25, "test": 0.25}, 0)
    assert set(header_sites) == set(SITES) and set(frame["site"]) == {"site-1", "site-2"}
    assert len(set(zip(header_sites, frame["site"]))) == 2  # one pseudonym per phantom site
