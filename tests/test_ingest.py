import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrsynth.tasks import manifest
from cxrsynth.tasks.diffusion.tokenizer import WordTokenizer
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.ingest import images, outputs, select
from cxrsynth.tasks.sources.base import Localisation, SourceError, SourceRecord
from cxrsynth.tasks.sources.decode import decode_image
from tests.conftest import ROOT as REPO
from tests.conftest import write_tiny_params
from tests.sourcefiles import ramp, write_csv, write_dicom, write_phantom_collection, write_picture

# ------------------------------------------------------------------------------------- plain functions


def _record(row, patient, study="s", view="PA", path="x.dcm", **extra):
    return SourceRecord(row=row, patient_key=patient, study_key=study, image_path=Path(path), view=view, **extra)


def test_select_keeps_wanted_and_unknown_views_then_caps():
    records = [_record(1, "a", view="PA"), _record(2, "a", view="LATERAL"), _record(3, "b", view=None),
               _record(4, "c", view="ap"), _record(5, "d", view="PA")]
    selection = select.select_records(records, ["PA", "AP"], max_images=3)
    assert [r.row for r in selection.records] == [1, 3, 4]
    assert (selection.listed, selection.other_view, selection.unknown_view, selection.capped) == (5, 1, 1, 1)


def test_pseudonyms_are_sequential_in_listing_order():
    records = [_record(1, "MRN-77", "s1"), _record(2, "MRN-12", "s9"), _record(3, "MRN-77", "s1"), _record(4, "MRN-77", "s2")]
    pseudonyms = select.pseudonymise(records)
    assert [(p.image_id, p.patient_id, p.study_id) for p in pseudonyms] == [
        ("img-000001", "pat-00001", "std-000001"), ("img-000002", "pat-00002", "std-000002"),
        ("img-000003", "pat-00001", "std-000001"), ("img-000004", "pat-00001", "std-000003")]


def test_same_study_name_under_two_patients_is_two_studies():
    pseudonyms = select.pseudonymise([_record(1, "a", "study1"), _record(2, "b", "study1")])
    assert pseudonyms[0].study_id != pseudonyms[1].study_id


def test_process_item_writes_the_working_image(tmp_path):
    path = write_dicom(tmp_path / "src" / "a.dcm", ramp(40, 20), pixel_spacing=0.5, institution="SITE-B")
    result = images.process_item(images.WorkItem("img-000007", path), 16, tmp_path / "out")
    assert result.reason is None and result.file_digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (result.orig_height, result.orig_width, result.scale, result.pad_top, result.pad_left) == (40, 20, 0.4, 0, 4)
    assert result.pixel_spacing_mm == pytest.approx(0.5 / 0.4) and result.site == "SITE-B"
    written = np.asarray(Image.open(tmp_path / "out" / "images" / "img-000007.png"))
    assert written.shape == (16, 16) and written.dtype == np.uint16 and written[:, :4].max() == 0


def test_pixel_digest_names_the_pixels_not_the_file(tmp_path):
    stored = ramp(40, 20)
    same = [write_dicom(tmp_path / f"{name}.dcm", stored, patient_id=name) for name in ("a", "b")]
    other = write_dicom(tmp_path / "c.dcm", stored[::-1].copy())
    first, second, third = (images.process_item(images.WorkItem(f"img-00000{n}", p), 16, tmp_path / "out")
                            for n, p in enumerate([*same, other]))
    assert first.file_digest != second.file_digest and first.pixel_digest == second.pixel_digest != third.pixel_digest
    assert first.pixel_digest == hashlib.sha256(decode_image(same[0]).pixels.tobytes()).hexdigest()


def test_missing_and_non_image_files_are_quarantined_with_reasons(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture")
    missing = images.process_item(images.WorkItem("img-000001", tmp_path / "gone.dcm"), 16, tmp_path / "out")
    text = images.process_item(images.WorkItem("img-000002", tmp_path / "notes.jpg"), 16, tmp_path / "out")
    assert (missing.reason, missing.file_digest) == ("file not found", "missing")
    assert text.reason.startswith("not an image") and text.file_digest != "missing"


def test_nih_style_spacing_is_rescaled_to_the_file():
    item = images.WorkItem("img-000001", Path("x.png"), pixel_spacing_mm=0.2, pixel_spacing_shape=(2048, 2500))
    assert images.source_spacing(item, (1024, 1024), header_spacing=None) == pytest.approx(0.2 * (2 + 2500 / 1024) / 2)
    assert images.source_spacing(images.WorkItem("i", Path("x")), (8, 8), header_spacing=0.3) == 0.3


@pytest.mark.parametrize(
    "localisation, reason",
    [
        (Localisation("pneumothorax", "rle", "0 5000"), "RLE of lesion 0"),
        (Localisation("nodule", "mask", "MASK_SMALL"), "mask of lesion 0 is 8x8, image is 40x20"),
        (Localisation("nodule", "mask", "MASK_ABSENT"), "mask file of lesion 0 not found"),
    ],
)
def test_bad_localisations_quarantine_the_image(tmp_path, localisation, reason):
    path = write_dicom(tmp_path / "a.dcm", ramp(40, 20))
    write_picture(tmp_path / "small.png", np.ones((8, 8), np.uint8))
    value = {"MASK_SMALL": str(tmp_path / "small.png"), "MASK_ABSENT": str(tmp_path / "nope.png")}.get(localisation.value, localisation.value)
    item = images.WorkItem("img-000001", path, (Localisation(localisation.finding, localisation.kind, value),))
    result = images.process_item(item, 16, tmp_path / "out")
    assert result.reason.startswith(reason)
    assert not (tmp_path / "out").exists()  # nothing written for a quarantined image


def test_mask_copies_are_binary_and_named_by_pseudonym(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", ramp(40, 20))
    mask = np.zeros((40, 20), np.uint8)
    mask[5:9, 3:6] = 7
    write_picture(tmp_path / "m.png", mask)
    item = images.WorkItem("img-000003", path, (Localisation("nodule", "box", "1,2,3,4"), Localisation("nodule", "mask", str(tmp_path / "m.png"))))
    result = images.process_item(item, 16, tmp_path / "out")
    assert result.localisations == ((0, "nodule", "box", "1,2,3,4"), (1, "nodule", "mask", "img-000003_1.png"))
    copy = np.asarray(Image.open(tmp_path / "out" / "source_masks" / "img-000003_1.png"))
    np.testing.assert_array_equal(copy, (mask > 0) * 255)


def _results(*reasons):
    return {f"img-{n:06d}": images.ImageResult(f"img-{n:06d}", reason=reason, orig_height=10, orig_width=10, scale=1.0,
                                               pad_top=0, pad_left=0)
            for n, reason in enumerate(reasons, start=1)}


def test_manifest_excludes_quarantined_and_splits_by_patient():
    records = [_record(n, f"p{n % 7}", labels={"nodule": n % 2}) for n in range(1, 41)]
    pseudonyms = select.pseudonymise(records)
    results = _results(*([None] * 39 + ["file not found"]))
    frame = manifest.validate(outputs.manifest_frame(records, pseudonyms, results, "folder", {"train": 0.7, "val": 0.1, "test": 0.2}, 0), "ingest")
    assert len(frame) == 39 and "img-000040" not in set(frame.image_id)
    assert (frame.groupby("patient_id")["split"].nunique() == 1).all()
    assert frame.structured_nodule.tolist()[:3] == [1, 0, 1] and frame.structured_pneumothorax.isna().all()
    quarantine = outputs.quarantine_frame(records, pseudonyms, results)
    assert quarantine.to_dict("records") == [{"row": 40, "image_id": "img-000040", "reason": "file not found"}]


def test_all_quarantined_is_an_error():
    records = [_record(1, "a")]
    with pytest.raises(SourceError, match="all 1 were quarantined"):
        outputs.manifest_frame(records, select.pseudonymise(records), _results("empty file"), "folder", {"train": 1.0}, 0)


# ------------------------------------------------------------------------------------- the flow


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):  # a loaded machine needs more than the default 30 s
        yield


# A real source has no reserve collection, so no ceiling variant (a params error otherwise).
REAL_SOURCE_BASELINES = ["real_only", "classical_aug", "class_weighted"]


def _project(tmp_path: Path, monkeypatch, source: str, source_path: Path, **ingest_params) -> Path:
    sections = {} if source == "phantom" else {"mix": {"baselines": REAL_SOURCE_BASELINES}}
    write_tiny_params(tmp_path, ingest={"source": source, "path": str(source_path), **ingest_params}, **sections)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _run():
    from cxrsynth.flows.ingest import ingest_flow

    return ingest_flow(params_path="params.yaml")


def _digests(root: Path) -> dict[str, str]:
    files = sorted(p for p in [*(root / "data/ingest").rglob("*"), root / "metrics/ingest.json"] if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def _mlflow_run(root: Path):
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cxrsynth")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    return client, runs[0]


@pytest.mark.slow
def test_ingest_flow_on_a_phantom_style_collection(tmp_path, monkeypatch, prefect_server):
    source = write_phantom_collection(tmp_path / "data" / "phantom", n_patients=12, size=40)
    broken = source / "files/patient00002/study1/view1_frontal.dcm"
    broken.write_bytes(broken.read_bytes()[:-700])  # truncated pixel data
    (source / "files/patient00004/study1/view1_frontal.dcm").write_text("not a radiograph")
    root = _project(tmp_path, monkeypatch, "phantom", Path("data/phantom"))

    metrics = _run()
    frame = manifest.read(root / "data/ingest/manifest.parquet")
    manifest.validate(frame, "ingest")
    assert metrics["images"] == len(frame) == 14 and metrics["quarantined"] == 2
    assert (frame.groupby("patient_id")["split"].nunique() == 1).all() and set(frame.split) == {"train", "val", "test"}
    assert frame.image_id.is_monotonic_increasing and frame.dataset.eq("phantom").all() and frame.report.notna().all()
    assert set(frame.site) == {"site-1", "site-2"} and frame.pixel_spacing_mm.iloc[0] == pytest.approx(1.4 / 0.8)
    for path in frame.path:
        assert np.asarray(Image.open(root / path)).shape == (32, 32)

    quarantine = pd.read_csv(root / "data/ingest/quarantine.csv")
    assert list(quarantine.columns) == ["row", "image_id", "reason"] and quarantine.row.tolist() == [2, 5]
    assert "DICOM pixel data cannot be decoded" in quarantine.reason[0] and "DICOM" in quarantine.reason[1]
    assert not quarantine.reason.str.contains("patient000|view1_frontal|\\.dcm").any()

    localisations = pd.read_parquet(root / "data/ingest/localisations.parquet")
    assert set(localisations.image_id) <= set(frame.image_id) and (localisations.kind == "mask").all()
    assert all((root / value).is_file() for value in localisations.value)
    assert metrics["findings"]["pneumothorax"]["present"] == frame.structured_pneumothorax.eq(1).sum() > 0
    assert json.loads((root / "metrics/ingest.json").read_text()) == metrics

    client, run = _mlflow_run(root)
    assert run.data.params["ingest.source"] == "phantom" and run.data.metrics["quarantined"] == 2
    assert len(run.data.tags["cxrsynth.input_md5.ingest_source"]) == 32
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"quarantine.csv", "sample_grid.png", "ingest.json"}

    first = _digests(root)
    _run()
    assert _digests(root) == first  # a second run writes the same bytes
    _, rerun = _mlflow_run(root)
    assert rerun.data.tags["cxrsynth.input_md5.ingest_source"] == run.data.tags["cxrsynth.input_md5.ingest_source"]


@pytest.mark.slow
def test_the_phantom_test_and_reserve_collections_take_their_own_splits(tmp_path, monkeypatch, prefect_server):
    from cxrsynth.flows.phantom import write_collections
    from cxrsynth.tasks.params import load_params

    write_tiny_params(tmp_path, phantom={"n_patients": 24, "size": 32, "reserve_positives": 3,
                                         "test_collection": {"min_positives_rare": 3, "min_positives_other": 1}})
    monkeypatch.chdir(tmp_path)
    written = write_collections(load_params("params.yaml"), tmp_path / "data/phantom")

    metrics = _run()
    frame = manifest.read(tmp_path / "data/ingest/manifest.parquet")
    manifest.validate(frame, "ingest")  # among others: no patient in two splits
    counts = frame["split"].value_counts().to_dict()
    images = {name: len(tables["labels.csv"]) for name, (tables, _) in written.items()}
    assert counts["test"] == images["test"] and counts["reserve"] == images["reserve"]
    assert counts["train"] + counts["val"] == images["train"] and counts["val"] > 0
    assert metrics["split"]["reserve"]["images"] == images["reserve"]
    test_patients = set(frame.loc[frame.split == "test", "patient_id"])
    assert not test_patients & set(frame.loc[frame.split != "test", "patient_id"])
    rare = [metrics["findings"][f]["present_by_split"] for f in ("pneumothorax", "nodule")]
    assert all(by_split["test"] > 0 and by_split["reserve"] > 0 for by_split in rare)


def _decode_over(fanout: str, source: Path, items: list, out: Path) -> dict:
    from prefect import flow

    from cxrsynth.flows.ingest import decode_all
    from cxrsynth.tasks.params import parse_params

    params = parse_params({"ingest": {"path": str(source), "image_size": 16, "workers": 2}, "runtime": {"fanout": fanout}})

    @flow
    def decode():
        return decode_all(items, params, out)

    return decode()


def test_worker_processes_write_what_threads_write(tmp_path, prefect_server, capsys):
    source = tmp_path / "export"
    paths = [write_dicom(source / f"{n:02d}.dcm", ramp(40, 24 + n)) for n in range(32)]
    paths[3].write_bytes(paths[3].read_bytes()[:-300])  # truncated pixel data: quarantined, not fatal
    items = [images.WorkItem(f"img-{n:06d}", path) for n, path in enumerate([*paths, source / "missing.dcm"], start=1)]
    written = {}
    for fanout in ("threads", "processes"):
        results = _decode_over(fanout, source, items, tmp_path / fanout)
        files = sorted(p for p in (tmp_path / fanout).rglob("*") if p.is_file())
        written[fanout] = results, {p.relative_to(tmp_path / fanout): p.read_bytes() for p in files}
    assert "ingest: 2 chunks on 2 worker processes" in capsys.readouterr().out
    assert written["processes"] == written["threads"]
    results, files = written["processes"]
    assert list(results) == [item.image_id for item in items] and len(files) == 31
    assert "DICOM pixel data cannot be decoded" in results["img-000004"].reason
    assert "not found" in results["img-000033"].reason


SECRETS = ("DOE^JOHN", "DOE", "PID-998877", "998877", "HOSPITAL-SECRET-ACC", "Lakeview", "Houlihan", "55120931", "03/14/2019")
REPORT = "Small left pneumothorax. Called to Dr. Margaret Houlihan at 9:15 AM on 03/14/2019. MRN 55120931."


@pytest.mark.slow
def test_no_patient_identifier_reaches_outputs_mlflow_or_logs(tmp_path, monkeypatch):
    source = tmp_path / "export"
    write_dicom(source / "PID-998877_chest.dcm", ramp(48, 40), patient_name="DOE^JOHN", patient_id="PID-998877",
                institution="Lakeview Memorial Hospital")
    write_picture(source / "PID-998877_followup.png", ramp(48, 40, high=255, dtype=np.uint8))
    (source / "PID-998877_broken.png").write_text("HOSPITAL-SECRET-ACC")  # quarantined: its name must not leak either
    write_csv(source / "index.csv", ["path", "patient_id", "study_id", "pneumothorax", "report"], [
        ["PID-998877_chest.dcm", "PID-998877", "998877-1", "1", REPORT],
        ["PID-998877_followup.png", "PID-998877", "998877-2", "0", REPORT + " Films from Lakeview Memorial Hospital."],
        ["PID-998877_broken.png", "PID-998877", "998877-3", "", ""],
    ])
    root = _project(tmp_path, monkeypatch, "folder", source)
    # The stage as DVC runs it, in its own process with debug logging and its own Prefect home,
    # so every log line and the Prefect database it fills are captured and searched.
    environment = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(root / "prefect_home"),
                   "PREFECT_LOGGING_LEVEL": "DEBUG", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                   "CXRSYNTH_PREFECT_SERVER": "shared"}
    completed = subprocess.run([sys.executable, "-m", "cxrsynth.flows.cli", "stage", "ingest"], cwd=root, env=environment,
                               capture_output=True, text=True, timeout=240)
    logs = completed.stdout + completed.stderr
    assert completed.returncode == 0, logs[-3000:]
    assert "ingest: 2 images" in logs and "quarantined img-000003" in logs  # the logs were captured
    metrics = json.loads((root / "metrics/ingest.json").read_text())
    assert metrics["images"] == 2 and metrics["quarantined"] == 1

    frame = pd.read_parquet(root / "data/ingest/manifest.parquet")
    assert frame.site.fillna("none").tolist() == ["site-1", "none"] and frame.report.str.contains("pneumothorax").all()
    # What a model trained on the reports (diffusion.text_encoder.source: report) would keep of them.
    vocabulary = WordTokenizer.build(frame.report, min_count=1, max_tokens=64).vocabulary
    assert "pneumothorax" in vocabulary and not {"margaret", "houlihan", "lakeview", "55120931"} & set(vocabulary)
    texts = {"stage logs": logs}
    # .cxrsynth: the shared Prefect server's record and log
    outputs = [p for folder in ("data", "metrics", "mlruns", "prefect_home", ".cxrsynth")
               for p in (root / folder).rglob("*") if p.is_file()]
    outputs.append(root / "mlflow.db")
    assert len(outputs) > 8 and any(p.suffix == ".db" and "prefect_home" in str(p) for p in outputs)
    assert any(p.name == "prefect-server.log" for p in outputs)
    for path in outputs:
        texts[str(path)] = path.read_bytes().decode("latin-1")
        if path.suffix == ".parquet":  # compressed columns: check the decoded values too
            texts[f"{path} (values)"] = pd.read_parquet(path).astype(str).to_csv()
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} found in {where}"


@pytest.mark.slow
def test_ingest_of_the_real_nih_dev_set(shared_data, tmp_path, monkeypatch, prefect_server):
    root = _project(tmp_path, monkeypatch, "nih", shared_data / "nih-chestxray14-dev")
    metrics = _run()
    frame = manifest.validate(manifest.read(root / "data/ingest/manifest.parquet"), "ingest")
    assert metrics["images"] == 313 and metrics["quarantined"] == 0 and frame.patient_id.nunique() == 313
    assert {f: metrics["findings"][f]["present"] for f in FINDINGS} == {
        "cardiomegaly": 29, "pleural_effusion": 45, "pneumothorax": 22, "nodule": 52, "atelectasis": 53, "consolidation": 47}
    assert sum(metrics["findings"]["pneumothorax"]["present_by_split"].values()) == 22
    assert all(metrics["findings"][f]["present_by_split"][s] > 0 for f in FINDINGS for s in ("train", "val", "test"))
    assert (frame.orig_height == 1024).all() and (frame.scale == 32 / 1024).all()
    localisations = pd.read_parquet(root / "data/ingest/localisations.parquet")
    assert len(localisations) == 4 and (localisations.kind == "box").all()


def test_header_only_csv_says_it_has_no_rows(tmp_path):
    from cxrsynth.tasks.sources.registry import read_source

    write_csv(tmp_path / "index.csv", ["path", "patient_id", "pneumothorax"], [])
    with pytest.raises(SourceError, match=r"index\.csv: the CSV has a header but no rows$"):
        read_source("folder", tmp_path)


def _hostile_collection(source: Path) -> None:
    """Duplicates, one image under two patients, files outside the collection, a FIFO, a tiny image."""
    write_dicom(source / "a.dcm", ramp(48, 40), institution="SITE-A")
    (source / "a-copy.dcm").write_bytes((source / "a.dcm").read_bytes())
    write_picture(source / "b.png", ramp(48, 40, high=255, dtype=np.uint8))
    write_picture(source.parent / "outside.png", ramp(40, 40, high=200, dtype=np.uint8))
    (source / "link.png").symlink_to(source.parent / "outside.png")
    os.mkfifo(source / "pipe.png")
    write_picture(source / "tiny.png", np.full((3, 3), 9, dtype=np.uint8))
    write_csv(source / "index.csv", ["path", "patient_id", "pneumothorax"], [
        ["a.dcm", "P1", "1"], ["a-copy.dcm", "P1", "1"], ["b.png", "P2", "0"], ["b.png", "P3", "0"],
        ["../outside.png", "P4", ""], [str(source.parent / "outside.png"), "P4", ""], ["link.png", "P5", ""],
        ["pipe.png", "P6", ""], ["/dev/zero", "P6", ""], ["tiny.png", "P7", ""],
    ])


@pytest.mark.slow
def test_hostile_collection_is_quarantined_row_by_row(tmp_path, monkeypatch, prefect_server):
    _hostile_collection(tmp_path / "export")
    root = _project(tmp_path, monkeypatch, "folder", tmp_path / "export")
    with pytest.raises(SourceError, match=r"source row 3 \(pat-00002\) and source row 4 \(pat-00003\)\. Correct the index"):
        _run()

    _project(tmp_path, monkeypatch, "folder", tmp_path / "export", patient_conflict="merge")
    metrics = _run()
    frame = manifest.read(root / "data/ingest/manifest.parquet")
    assert frame.image_id.tolist() == ["img-000001", "img-000003"] and frame.patient_id.tolist() == ["pat-00001", "pat-00002"]
    assert (metrics["duplicates"], metrics["merged_patients"], metrics["quarantined"]) == (2, 1, 8)
    quarantine = pd.read_csv(root / "data/ingest/quarantine.csv")
    assert quarantine.set_index("row").reason.to_dict() == {
        2: "exact duplicate of img-000001 (source row 1): identical decoded pixels",
        4: "exact duplicate of img-000003 (source row 3): identical decoded pixels",
        5: "resolves outside ingest.path (set ingest.allow_outside_path to read it)",
        6: "resolves outside ingest.path (set ingest.allow_outside_path to read it)",
        7: "resolves outside ingest.path (set ingest.allow_outside_path to read it)",
        8: "is a FIFO, not a regular image file",
        9: "resolves outside ingest.path (set ingest.allow_outside_path to read it)",
        10: "PNG is 3x3, smaller than ingest.min_size (16)",
    }
    assert sorted(p.name for p in (root / "data/ingest/images").iterdir()) == ["img-000001.png", "img-000003.png"]

    _project(tmp_path, monkeypatch, "folder", tmp_path / "export", patient_conflict="merge", allow_outside_path=True)
    metrics = _run()
    reasons = pd.read_csv(root / "data/ingest/quarantine.csv").set_index("row").reason.to_dict()
    assert metrics["images"] == 3 and reasons[9] == "is a character device, not a regular image file"
    assert reasons[6] == reasons[7] == "exact duplicate of img-000005 (source row 5): identical decoded pixels"
