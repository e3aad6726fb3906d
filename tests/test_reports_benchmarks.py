"""The parser's references: Open-i MeSH mapping and split, the phantom truth reader, the scores, the disagreement
report, benchmarks/bench_parser.py, and floors on both parts of the real reports."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.reports.evaluation import (
    attribute_accuracy,
    disagreements,
    load_labelled_reports,
    predicted_presence,
    presence_scores,
    state_accuracy,
    write_disagreements,
)
from cxrsynth.tasks.reports.openi import (
    HELD_OUT_LIST,
    MESH_NOT_MODELLED,
    MESH_TO_FINDING,
    is_held_out,
    load_openi,
    mesh_findings,
    read_held_out,
    read_report,
)
from cxrsynth.tasks.reports.phantom_truth import load_phantom_truth, report_path
from cxrsynth.tasks.reports.records import FindingState
from cxrsynth.tasks.reports.rules import parse_reports

OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><MedlineCitation><Article><Abstract>
<AbstractText Label="INDICATION">Cough.</AbstractText>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH>{majors}<automatic>ignored</automatic></MeSH></eCitation>"""


def test_mesh_mapping_with_qualifiers():
    coded = mesh_findings(["Pleural Effusion/left/small", "Pleural Effusion/right/moderate", "Cardiac Shadow/enlarged",
                           "Mass/breast/large", "Airspace Disease/lung/base/left", "Calcified Granuloma/lung"])
    assert coded == {
        "pleural_effusion": {"laterality": "bilateral", "severity": "moderate"},
        "cardiomegaly": {"laterality": None, "severity": None},
        "consolidation": {"laterality": "left", "severity": None},
    }
    assert mesh_findings(["normal"]) == {}
    assert "nodule" in mesh_findings(["Mass/lung/middle lobe/right"])


def test_hydropneumothorax_is_both_findings_and_unmodelled_terms_are_none():
    assert mesh_findings(["Hydropneumothorax/left"]) == {
        "pneumothorax": {"laterality": "left", "severity": None},
        "pleural_effusion": {"laterality": "left", "severity": None},
    }
    hemothorax = mesh_findings(["Hemothorax/right/small"])
    assert hemothorax == {"pleural_effusion": {"laterality": "right", "severity": "mild"}}
    assert mesh_findings([f"{term}/lung/round" for term in MESH_NOT_MODELLED]) == {}
    assert not set(MESH_NOT_MODELLED) & set(MESH_TO_FINDING)
    assert all(len(reason) > 20 for reason in MESH_NOT_MODELLED.values())


def test_held_out_rule_and_list():
    # sha256("cxrsynth-openi-split-v1:" + name) starts with 0x64 (even) for 1.xml and 0xcb (odd) for 2.xml
    assert (is_held_out("1.xml"), is_held_out("2.xml")) == (False, True)
    held_out = read_held_out()
    assert all(is_held_out(f"{report_id}.xml") for report_id in held_out)
    assert 450 <= len(held_out) <= 560  # about half of the 1,008 shared reports
    assert read_held_out(HELD_OUT_LIST) == held_out


def test_held_out_list_errors(tmp_path):
    with pytest.raises(ValueError, match="missing.txt: cannot read the held-out list"):
        read_held_out(tmp_path / "missing.txt")
    (tmp_path / "list.txt").write_text("# comment\n2.xml\n3.txt\n")
    with pytest.raises(ValueError, match="list.txt: expected Open-i file names ending in .xml, got '3.txt'"):
        read_held_out(tmp_path / "list.txt")


@pytest.mark.shared_data
def test_held_out_list_is_the_rule_over_the_shared_reports(shared_data):
    folder = shared_data / "openi-reports" / "xml"
    if not folder.is_dir():
        pytest.skip("../shared/data/openi-reports is absent")
    assert read_held_out() == {path.stem for path in folder.glob("*.xml") if is_held_out(path.name)}


def test_openi_reader(tmp_path):
    folder = tmp_path / "openi-reports" / "xml"
    folder.mkdir(parents=True)
    (folder / "1.xml").write_text(OPENI_XML.format(findings="Small left effusion.", impression="No pneumothorax.",
                                                   majors="<major>Pleural Effusion/left/small</major>"))
    normal = OPENI_XML.format(findings="", impression="Normal chest.", majors="<major>normal</major>")
    (folder / "2.xml").write_text(normal)
    text, majors = read_report(folder / "1.xml")
    assert text == "Small left effusion.\n\nNo pneumothorax." and majors == ["Pleural Effusion/left/small"]
    frame = load_openi(tmp_path / "openi-reports")
    assert frame["report_id"].tolist() == ["1", "2"]
    assert frame["pleural_effusion"].tolist() == [True, False]
    assert frame.loc[0, "pleural_effusion_laterality"] == "left"
    (folder / "3.xml").write_text("<eCitation>")
    with pytest.raises(ValueError, match="3.xml: not a readable Open-i XML report"):
        load_openi(folder)
    with pytest.raises(ValueError, match="no Open-i XML reports"):
        load_openi(tmp_path)


def _phantom(tmp_path):
    root = tmp_path / "phantom"
    paths = ["files/patient00000/study1/view1_frontal.dcm", "files/patient00001/study1/view1_frontal.dcm"]
    texts = ["FINDINGS: Small right apical pneumothorax.\nIMPRESSION: Pneumothorax.", "FINDINGS: Lungs are clear."]
    for path, text in zip(paths, texts, strict=True):
        file = report_path(root, path)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    rows = [{"Path": path, "finding": finding, "state": 0, "laterality": "", "location": "", "severity": "",
             "in_labels": "", "in_report": ""} for path in paths for finding in FINDINGS]
    rows[2].update(state=1, laterality="right", location="apical", severity="mild", in_labels="1.0", in_report="1")
    rows[6 + 3].update(state=1, laterality="left", location="upper", in_labels="1.0")  # in the image, not the report
    pd.DataFrame(rows).to_csv(root / "truth.csv", index=False)
    return root


def test_phantom_truth_reader(tmp_path):
    root = _phantom(tmp_path)
    frame = load_phantom_truth(root / "truth.csv")
    assert frame["pneumothorax"].tolist() == [True, False]
    assert frame["nodule"].tolist() == [False, False]  # in the image, not in the report
    assert frame["pneumothorax_state"].tolist() == [1, pd.NA]
    assert frame.loc[0, "pneumothorax_location"] == "apical"
    parsed = parse_reports(frame["text"], progress=False)
    scores = presence_scores(predicted_presence(parsed), frame)
    assert scores["pneumothorax"]["precision"] == 1.0 and scores["pneumothorax"]["recall"] == 1.0
    assert attribute_accuracy(parsed, frame, "location") == {"pneumothorax": {"n": 1, "accuracy": 1.0}}
    assert state_accuracy(parsed, frame)["pneumothorax"] == {"n": 2, "accuracy": 1.0}


def test_phantom_truth_errors(tmp_path):
    with pytest.raises(ValueError, match="phantom truth file not found"):
        load_phantom_truth(tmp_path / "truth.csv")
    root = _phantom(tmp_path)
    (root / "reports" / "patient00001" / "study1.txt").unlink()
    with pytest.raises(ValueError, match="study1.txt: report of files/patient00001"):
        load_phantom_truth(root / "truth.csv")
    with pytest.raises(ValueError, match="not a phantom image path"):
        report_path(root, "patient1/a.dcm")
    truth = pd.read_csv(root / "truth.csv", dtype=str)
    truth.loc[0, "finding"] = "pneumonia"
    truth.to_csv(root / "truth.csv", index=False)
    with pytest.raises(ValueError, match="truth.csv, line 2: unknown finding 'pneumonia'"):
        load_phantom_truth(root / "truth.csv")


def test_presence_scores_count_uncertain_only_when_asked():
    parsed = [{"nodule": FindingState(-1)}, {"nodule": FindingState(1)}, {}]
    reference = pd.DataFrame({f: [f == "nodule", False, f == "nodule"] for f in FINDINGS})
    strict = presence_scores(predicted_presence(parsed), reference)["nodule"]
    assert (strict["tp"], strict["fp"], strict["fn"]) == (0, 1, 2)
    lenient = presence_scores(predicted_presence(parsed, count_uncertain=True), reference)["nodule"]
    assert (lenient["tp"], lenient["fp"], lenient["fn"]) == (1, 1, 1)


def _reference(rows):
    """A reference frame from (report_id, text, {finding: present})."""
    return pd.DataFrame([{"report_id": rid, "text": text, **{f: f in present for f in FINDINGS}}
                         for rid, text, present in rows])


def test_disagreements_name_the_error_and_its_sentence(tmp_path):
    reference = _reference([
        ("a", "Small left effusion. No pneumothorax.", {"pleural_effusion"}),
        ("b", "Heart size is normal.", {"cardiomegaly", "nodule"}),
        ("c", "Possible pneumonia.", {"consolidation"}),
    ])
    parsed = parse_reports(reference["text"], progress=False)
    table = disagreements(parsed, reference)
    assert table.values.tolist() == [
        ["b", "cardiomegaly", "false negative", "absent", "Heart size is normal.", "Heart size is normal."],
        ["b", "nodule", "false negative", "not_mentioned", "", "Heart size is normal."],
        ["c", "consolidation", "false negative", "uncertain", "Possible pneumonia.", "Possible pneumonia."],
    ]
    assert disagreements(parsed, reference, count_uncertain=True)["report_id"].tolist() == ["b", "b"]
    write_disagreements(table, tmp_path / "errors.csv")
    assert pd.read_csv(tmp_path / "errors.csv", keep_default_na=False).values.tolist() == table.values.tolist()
    table.loc[0, "report"] = "Heart | size\nis normal."
    write_disagreements(table, tmp_path / "errors.md")
    lines = (tmp_path / "errors.md").read_text().splitlines()
    assert len(lines) == 2 + len(table) and "Heart \\| size is normal." in lines[2]
    with pytest.raises(ValueError, match="errors.txt: the disagreement report must end in .csv or .md"):
        write_disagreements(table, tmp_path / "errors.txt")
    assert not (tmp_path / "errors.txt").exists()


def test_labelled_reports_csv(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("report_id,text,nodule,pneumothorax\nr1,Right upper lobe nodule.,1,\nr2,No pneumothorax.,0,-1\n")
    frame = load_labelled_reports(path)
    assert frame["nodule"].tolist() == [True, False] and frame["pneumothorax"].tolist() == [False, False]
    assert frame["cardiomegaly"].tolist() == [False, False]
    path.write_text("report_id,text,nodule\nr1,Nodule.,yes\n")
    with pytest.raises(ValueError, match="mine.csv, line 2, column nodule: expected 1, 0, -1 or blank, got 'yes'"):
        load_labelled_reports(path)
    path.write_text("id,text,nodule\n")
    with pytest.raises(ValueError, match="mine.csv: missing column\\(s\\) report_id"):
        load_labelled_reports(path)
    path.write_text("report_id,text,edema\n")
    with pytest.raises(ValueError, match="mine.csv: no finding column"):
        load_labelled_reports(path)


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_parser", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_parser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_parser_scores_labelled_reports_and_writes_their_errors(tmp_path, capsys):
    labelled = tmp_path / "mine.csv"
    labelled.write_text("report_id,text,nodule,pneumothorax\n"
                        "r1,Right upper lobe nodule.,1,\n"
                        "r2,Nodular density represents a nipple shadow.,,\n"
                        "r3,Possible small pneumothorax.,,1\n")
    errors = tmp_path / "errors.md"
    code = _bench().main(["--phantom", str(tmp_path / "none.csv"), "--openi", str(tmp_path / "none"),
                          "--labelled", str(labelled), "--errors", str(errors), "--json", str(tmp_path / "r.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "skipped phantom" in out and "skipped Open-i" in out and "1 disagreements written" in out
    rows = errors.read_text().splitlines()[2:]
    assert len(rows) == 1 and "r3" in rows[0] and "Possible small pneumothorax." in rows[0]
    assert "labelled reports" in (tmp_path / "r.json").read_text()


@pytest.mark.shared_data
def test_bench_parser_keeps_held_out_errors_out_when_asked(shared_data, tmp_path):
    folder = shared_data / "openi-reports"
    if not folder.is_dir():
        pytest.skip("../shared/data/openi-reports is absent")
    errors = tmp_path / "errors.csv"
    _bench().main(["--phantom", str(tmp_path / "none.csv"), "--openi", str(folder), "--errors", str(errors),
                   "--errors-part", "readable"])
    table = pd.read_csv(errors, dtype=str)
    assert set(table["part"]) == {"readable"} and not table["report_id"].isin(read_held_out()).any()


# Floors the rule parser reaches on each part of the 1,008 Open-i reports (benchmarks/bench_parser.py prints the
# figures): the readable part that rules were tuned on and the held-out part that is only scored. Nodule is lower on
# the readable part because the indexers code "nodular density" and granulomas as Density or Granuloma, not Nodule.
OPENI_FLOORS = {
    "readable": {
        "cardiomegaly": (0.95, 0.95), "pleural_effusion": (0.9, 0.95), "pneumothorax": (0.9, 0.9),
        "nodule": (0.75, 0.85), "atelectasis": (0.9, 0.95), "consolidation": (0.9, 0.95),
    },
    "held-out": {
        "cardiomegaly": (0.95, 0.95), "pleural_effusion": (0.9, 0.95), "pneumothorax": (0.7, 0.9),
        "nodule": (0.7, 0.85), "atelectasis": (0.9, 0.95), "consolidation": (0.9, 0.95),
    },
}


@pytest.mark.shared_data
def test_rule_parser_floor_on_openi(shared_data):
    folder = shared_data / "openi-reports"
    if not folder.is_dir():
        pytest.skip("../shared/data/openi-reports is absent")
    reference = load_openi(folder)
    assert len(reference) == 1008
    held_out = reference["report_id"].isin(read_held_out())
    for part, rows in (("readable", ~held_out), ("held-out", held_out)):
        frame = reference[rows].reset_index(drop=True)
        scores = presence_scores(predicted_presence(parse_reports(frame["text"], progress=False)), frame)
        for finding, (precision, recall) in OPENI_FLOORS[part].items():
            assert scores[finding]["precision"] >= precision, (part, finding, scores[finding])
            assert scores[finding]["recall"] >= recall, (part, finding, scores[finding])
