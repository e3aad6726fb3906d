import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import read_mask
from cxrsynth.tasks.params import PhantomParams
from cxrsynth.tasks.sources.phantom.layout import image_path
from cxrsynth.tasks.sources.phantom.rendering import render
from cxrsynth.tasks.sources.phantom.reports import CHEXPERT_COLUMN, CHEXPERT_COLUMNS, write_report
from cxrsynth.tasks.sources.phantom.sampling import sample_patient
from cxrsynth.tasks.sources.phantom.study import SITES
from cxrsynth.tasks.sources.phantom.writer import generate_patients, read_dicom_image, write_dicom, write_tables

EVERY_FINDING = {finding: 0.5 for finding in FINDINGS}
HEDGES = ("possible", "cannot be excluded", "may represent", "questionable", "may be")
NAMED_BY = {"cardiomegaly": ("cardiomegaly", "enlarge"), "pleural_effusion": ("effusion", "costophrenic"),
            "pneumothorax": ("pneumothorax",), "nodule": ("nodul",), "atelectasis": ("atelectasis", "collapse"),
            "consolidation": ("consolidation",)}


def _config(**changes) -> PhantomParams:
    return PhantomParams(**{"n_patients": 40, "size": 64, **changes})


def _studies(config: PhantomParams, n_patients: int):
    return [study for index in range(n_patients) for study in sample_patient(config, index)]


def _first_with(config: PhantomParams, finding: str, **where):
    for index in range(200):
        for study in sample_patient(config, index):
            lesion = study.lesion(finding)
            if lesion is not None and all(lesion.detail.get(key) == value for key, value in where.items()):
                return study
    raise AssertionError(f"no {finding} {where} in 200 patients")


def test_patient_is_deterministic_in_seed_and_index():
    config = _config(prevalence=EVERY_FINDING)
    first, again = sample_patient(config, 7), sample_patient(config, 7)
    assert first == again
    assert np.array_equal(render(first[0], 64, 1.4).image, render(again[0], 64, 1.4).image)
    other_seed = sample_patient(config.model_copy(update={"seed": 1}), 7)
    assert other_seed != first
    assert not np.array_equal(render(other_seed[0], 64, 1.4).image, render(first[0], 64, 1.4).image)


def test_chunks_give_the_same_patients_in_any_order(tmp_path):
    config = _config(size=32)
    whole = generate_patients(config, range(4), tmp_path / "whole")
    late = generate_patients(config, range(2, 4), tmp_path / "parts")
    early = generate_patients(config, range(2), tmp_path / "parts")
    assert early.truth + late.truth == whole.truth
    assert early.labels + late.labels == whole.labels
    for row in whole.labels:
        assert (tmp_path / "whole" / row["Path"]).read_bytes() == (tmp_path / "parts" / row["Path"]).read_bytes()


def test_negative_patient_index_is_refused():
    with pytest.raises(ValueError, match="patient index"):
        sample_patient(_config(), -1)


def test_prevalence_is_close_to_params():
    prevalence = {"cardiomegaly": 0.12, "pleural_effusion": 0.3, "pneumothorax": 0.03,
                  "nodule": 0.03, "atelectasis": 0.1, "consolidation": 0.2}
    studies = _studies(_config(prevalence=prevalence), 500)
    for finding, expected in prevalence.items():
        observed = np.mean([study.lesion(finding) is not None for study in studies])
        tolerance = max(0.015, 4 * np.sqrt(expected * (1 - expected) / len(studies)))
        assert abs(observed - expected) < tolerance, (finding, observed, expected)
    none = np.mean([not study.lesions for study in studies])
    assert abs(none - np.prod([1 - p for p in prevalence.values()])) < 0.06


def test_repeat_studies_and_sites_follow_params():
    studies = _studies(_config(repeat_study_fraction=0.3), 300)
    follow_ups = sum(study.study_index == 1 for study in studies)
    assert 60 < follow_ups < 120
    assert {study.site for study in studies} == set(SITES)
    assert {study.site for study in _studies(_config(sites=1), 30)} == {SITES[0]}


@pytest.mark.parametrize("finding", FINDINGS)
def test_lesion_changes_pixels_inside_its_mask_and_nowhere_else(finding):
    study = _first_with(_config(prevalence=EVERY_FINDING), finding)
    drawn = render(study, 128, 2.8, findings=(finding,))
    without = render(study, 128, 2.8, findings=())
    mask = drawn.masks[finding]
    assert set(drawn.masks) == {finding} and mask.dtype == bool and mask.any()
    difference = np.abs(drawn.image - without.image)
    near = ndimage.binary_dilation(mask, iterations=3)  # the detector blur spreads an edge a pixel or two
    assert difference[~near].max() < 0.01
    assert difference[mask].mean() > 0.01
    assert np.percentile(difference[mask], 90) > 0.03


def test_nodule_mask_matches_its_size_in_mm():
    study = _first_with(_config(prevalence=EVERY_FINDING), "nodule", margin="smooth")
    lesion = study.lesion("nodule")
    spacing = 1.4
    area = render(study, 256, spacing).masks["nodule"].sum() * spacing**2
    expected = np.pi * (lesion.detail["size_mm"] / 2) ** 2
    assert 0.8 * expected < area < 1.2 * expected


@pytest.mark.parametrize("finding", ["consolidation", "cardiomegaly"])
def test_lesion_contrast_scales_visibility(finding):
    study = _first_with(_config(prevalence=EVERY_FINDING), finding)
    without = render(study, 96, 1.4, findings=())
    faint = np.abs(render(study, 96, 1.4, 0.5, findings=(finding,)).image - without.image).sum()
    strong = np.abs(render(study, 96, 1.4, 1.5, findings=(finding,)).image - without.image).sum()
    assert strong > 2 * faint


def test_dicom_reads_back_as_12_bit_monochrome2_with_spacing_and_site(tmp_path):
    config = _config(size=96)
    study = sample_patient(config, 3)[0]
    image = render(study, 96, 1.4).image
    path = tmp_path / image_path(study)
    write_dicom(path, image, study, config)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Modality == "CR" and ds.ViewPosition == "PA"
    assert [float(v) for v in ds.PixelSpacing] == [1.4, 1.4]
    assert ds.PatientID == "PHANTOM-00004" and str(ds.PatientName) == "PHANTOM^00004"
    assert ds.InstitutionName == ds.Manufacturer == study.site
    assert ds.PatientSex in ("M", "F") and re.fullmatch(r"\d{3}Y", ds.PatientAge)
    pixels = ds.pixel_array
    assert pixels.shape == (96, 96) and pixels.max() <= 4095 and pixels.max() > 3000 and pixels.min() < 400
    assert np.abs(read_dicom_image(path) - image).max() <= 0.5 / 4095 + 1e-6


def test_reports_have_sections_negations_hedges_and_sides():
    config = _config(prevalence=EVERY_FINDING, uncertain_fraction=0.4, repeat_study_fraction=0.5)
    texts = []
    for index in range(60):
        studies = sample_patient(config, index)
        for number, study in enumerate(studies):
            report = write_report(study, studies[number - 1] if number else None, config)
            text = report.text.lower()
            texts.append(report.text)
            assert "FINDINGS:" in report.text and "IMPRESSION:" in report.text
            for lesion in study.lesions:
                state = report.states[lesion.finding]
                assert state in (1, -1)
                if lesion.laterality in ("left", "right"):
                    assert lesion.laterality in text
            if any(state == -1 for state in report.states.values()):
                assert any(hedge in text for hedge in HEDGES)
            absent = {f for f, s in report.states.items() if s == 0}
            assert absent.isdisjoint(lesion.finding for lesion in study.lesions)
    everything = "\n".join(texts)
    for phrase in ("No pneumothorax.", "Heart size is normal.", "cannot be excluded", "may represent",
                   "Possible small", "apical pneumothorax", "Interval resolution", "No acute cardiopulmonary"):
        assert phrase in everything, phrase
    assert len(set(texts)) == len(texts)


def test_report_only_findings_are_blank_in_labels_but_in_truth_and_report(tmp_path):
    config = _config(size=32, prevalence=EVERY_FINDING, report_only_fraction=0.4, uncertain_fraction=0.3)
    tables = write_tables(generate_patients(config, range(30), tmp_path), tmp_path)
    labels = pd.read_csv(tmp_path / "labels.csv").set_index("Path")
    truth = pd.read_csv(tmp_path / "truth.csv")
    assert len(truth) == len(labels) * len(FINDINGS) == len(tables["truth.csv"])
    report_only = truth[(truth.state == 1) & truth.in_labels.isna() & truth.in_report.notna()]
    assert len(report_only) > 5
    for row in truth.itertuples():  # labels.csv, truth.csv and the report agree everywhere
        value = labels.loc[row.Path, CHEXPERT_COLUMN[row.finding]]
        assert (np.isnan(value) and np.isnan(row.in_labels)) or value == row.in_labels
        if not np.isnan(row.in_labels):
            assert row.in_labels == row.in_report
    for row in report_only.itertuples():
        study_number = re.search(r"study(\d+)", row.Path).group(1)
        patient = re.search(r"patient\d+", row.Path).group(0)
        text = (tmp_path / "reports" / patient / f"study{study_number}.txt").read_text().lower()
        assert any(word in text for word in NAMED_BY[row.finding])
    hedged = truth[(truth.state == 1) & (truth.in_report == -1)]
    assert len(hedged) > 5 and set(hedged.in_labels.dropna()) <= {-1.0}


def test_labels_csv_is_chexpert_format_and_lesion_masks_line_up(tmp_path):
    config = _config(size=48, prevalence=EVERY_FINDING, mask_fraction=0.6)
    write_tables(generate_patients(config, range(12), tmp_path), tmp_path)
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert tuple(labels.columns) == CHEXPERT_COLUMNS
    for column in CHEXPERT_COLUMNS[5:]:
        assert set(labels[column].dropna()) <= {1.0, 0.0, -1.0}, column
    assert labels["Path"].str.fullmatch(r"files/patient\d{5}/study\d/view1_frontal\.dcm").all()
    assert set(labels["Frontal/Lateral"]) == {"Frontal"} and set(labels["AP/PA"]) == {"PA"}
    assert set(labels["Sex"]) <= {"Male", "Female"} and labels["Age"].between(18, 95).all()
    assert labels["Lung Lesion"].notna().any()
    for path in labels["Path"]:
        assert (tmp_path / path).is_file()
    lesions = pd.read_csv(tmp_path / "lesions.csv")
    truth = pd.read_csv(tmp_path / "truth.csv")
    positives = truth[truth.state == 1]
    assert 0.3 * len(positives) < len(lesions) < 0.9 * len(positives)
    shown = set(zip(positives.Path, positives.finding, strict=True))
    for row in lesions.itertuples():
        assert (row.Path, row.finding) in shown
        assert row.mask.startswith("masks/") and row.mask.endswith(".png")
        mask = read_mask(tmp_path / row.mask)
        assert mask.shape == (48, 48) and set(np.unique(mask)) <= {0, 255} and mask.any()
    unmasked = generate_patients(_config(size=32, mask_fraction=0.0), range(6), tmp_path / "none")
    assert write_tables(unmasked, tmp_path / "none")["lesions.csv"].empty


def test_sites_differ_measurably_in_noise_and_contrast():
    studies = _studies(_config(size=96), 24)
    noise, contrast = {site: [] for site in SITES}, {site: [] for site in SITES}
    for study in studies:
        image = render(study, 96, 1.4, findings=()).image
        reexposed = replace(study, acquisition=replace(study.acquisition, noise_seed=study.acquisition.noise_seed + 1))
        noise[study.site].append(np.std(image - render(reexposed, 96, 1.4, findings=()).image) / np.sqrt(2))
        contrast[study.site].append(np.percentile(image, 90) - np.percentile(image, 10))
    assert min(len(v) for v in noise.values()) >= 5
    assert np.mean(noise["SITE-B"]) > 1.25 * np.mean(noise["SITE-A"])
    assert np.mean(contrast["SITE-B"]) < np.mean(contrast["SITE-A"]) - 0.03


@pytest.mark.slow
def test_flow_writes_the_collection_layout_on_the_tiny_profile(tmp_path, tiny_project):
    from cxrsynth.flows.phantom import phantom_flow
    from cxrsynth.tasks import stages
    from cxrsynth.tasks.params import load_params

    config = load_params(tiny_project() / "params.yaml").phantom

    summary = phantom_flow("params.yaml")

    root = tmp_path / stages.load().output("phantom")
    layout = ["files", "labels.csv", "lesions.csv", "masks", "reports", "truth.csv"]
    assert sorted(p.name for p in root.iterdir()) == sorted([*layout, "reserve", "test"])
    labels = pd.read_csv(root / "labels.csv")
    assert summary["images"] == len(labels) and summary["patients"] == config.n_patients
    patients = {}
    for folder in ("", "test", "reserve"):
        collection = root / folder
        assert sorted(p.name for p in collection.iterdir() if p.name not in ("test", "reserve")) == layout
        for path in pd.read_csv(collection / "labels.csv")["Path"]:
            assert (collection / path).is_file()
            patient, study = re.search(r"(patient\d{5})/study(\d)", path).groups()
            assert (collection / "reports" / patient / f"study{study}.txt").is_file()
            patients.setdefault(patient, set()).add(folder)
        for mask in pd.read_csv(collection / "lesions.csv")["mask"]:
            assert (collection / mask).is_file()
    assert all(len(folders) == 1 for folders in patients.values())  # no patient number in two collections
    rare = config.test_collection.min_positives_rare
    assert all(summary["test"]["findings"][f]["stated"] >= rare for f in ("pneumothorax", "nodule"))
    assert all(summary["reserve"]["findings"][f]["stated"] >= config.reserve_positives for f in ("pneumothorax", "nodule"))
    assert not list(tmp_path.glob("data/.*"))  # no staging folder left behind
    ds = pydicom.dcmread(root / labels["Path"][0])
    assert ds.Rows == config.size
