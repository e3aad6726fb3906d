import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxrsynth.tasks import manifest
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.reports.evaluation import agreement, stage_metrics, state_counts
from cxrsynth.tasks.reports.merge import apply_uncertain_policy, manifest_additions, prefer_source, report_columns
from cxrsynth.tasks.reports.records import FindingState, findings_table, write_findings


def labels(values):
    return pd.Series(values, dtype="Int8")


@pytest.mark.parametrize(
    "prefer, expected",
    [("structured", [1, 0, 1, -1, None]), ("report", [1, 1, 0, -1, None])],
)
def test_preferred_source_wins_and_the_other_fills_gaps(prefer, expected):
    structured = labels([1, 0, 1, None, None])
    reported = labels([None, 1, 0, -1, None])
    assert prefer_source(structured, reported, prefer).tolist() == [pd.NA if v is None else v for v in expected]


@pytest.mark.parametrize("policy, uncertain_becomes", [("positive", 1), ("negative", 0), ("ignore", pd.NA)])
def test_uncertain_policy(policy, uncertain_becomes):
    result = apply_uncertain_policy(labels([-1, 1, 0, None]), policy)
    assert result.tolist() == [uncertain_becomes, 1, 0, pd.NA]
    assert result.dtype == pd.Int8Dtype()


def test_bad_policy_and_preference_are_named():
    with pytest.raises(ValueError, match="uncertain_policy"):
        apply_uncertain_policy(labels([1]), "maybe")
    with pytest.raises(ValueError, match="prefer"):
        prefer_source(labels([1]), labels([1]), "both")


def test_agreement_on_rows_where_both_exist():
    first = labels([1, 0, 1, None, -1, 0])
    second = labels([1, 0, 0, 1, -1, None])
    result = agreement(first, second)
    assert result["n"] == 4
    assert result["rate"] == pytest.approx(0.75)
    assert -1 <= result["kappa"] < 1


def test_agreement_without_overlap_or_variation():
    assert agreement(labels([1, None]), labels([None, 0])) == {"n": 0, "rate": None, "kappa": None}
    assert agreement(labels([1, 1]), labels([1, 1]))["kappa"] is None


def _frame():
    frame = pd.DataFrame({
        "image_id": ["a", "b", "c", "d"],
        "patient_id": ["p1", "p2", "p3", "p4"],
        "split": ["train", "val", "test", "test"],
        "source": "real",
        "dataset": "phantom",
        "path": [f"data/ingest/images/{name}.png" for name in "abcd"],
        "report": ["Small right apical pneumothorax. No effusion.", "Possible left effusion.", None, " "],
        "structured_pneumothorax": [None, 0, 1, None],
        "structured_pleural_effusion": [0, None, None, None],
    })
    return manifest.conform(frame, "ingest")


def _parsed():
    return [
        {"pneumothorax": FindingState(1, "right", "apical", "mild", "Small right apical pneumothorax."),
         "pleural_effusion": FindingState(0, sentence="No effusion.")},
        {"pleural_effusion": FindingState(-1, "left", sentence="Possible left effusion.")},
        {},
        {},
    ]


def test_additions_follow_policy_and_keep_attributes_of_present_findings_only():
    frame = _frame()
    additions = manifest_additions(frame, _parsed(), prefer="structured", policy="positive")
    assert additions["report_pneumothorax"].tolist() == [1, pd.NA, pd.NA, pd.NA]
    assert additions["pneumothorax"].tolist() == [1, 0, 1, pd.NA]
    assert additions["pleural_effusion"].tolist() == [0, 1, pd.NA, pd.NA]
    assert additions["pneumothorax_laterality"].tolist() == ["right", pd.NA, pd.NA, pd.NA]
    assert additions["pleural_effusion_laterality"].tolist() == [pd.NA, "left", pd.NA, pd.NA]
    assert additions["prompt"].tolist() == [
        "small right apical pneumothorax; no pleural effusion",
        "left pleural effusion; no pneumothorax",
        "pneumothorax",
        pd.NA,  # neither report nor labels
    ]
    written = manifest.validate(manifest.extend(frame, additions, "parse_reports"), "parse_reports")
    assert written["report"].tolist()[:2] == frame["report"].tolist()[:2]


def test_ignore_policy_drops_uncertain_from_the_final_label():
    additions = manifest_additions(_frame(), _parsed(), prefer="report", policy="ignore")
    assert additions["pleural_effusion"].tolist() == [0, pd.NA, pd.NA, pd.NA]
    assert additions["report_pleural_effusion"].tolist() == [0, -1, pd.NA, pd.NA]


def test_parsed_rows_must_match_the_manifest():
    with pytest.raises(ValueError, match="2 parsed reports for 4 manifest rows"):
        manifest_additions(_frame(), _parsed()[:2], "structured", "ignore")


def test_findings_table_roundtrip(tmp_path):
    table = findings_table(["a", "b", "c", "d"], _parsed())
    assert table[["image_id", "finding"]].values.tolist() == [
        ["a", "pleural_effusion"], ["a", "pneumothorax"], ["b", "pleural_effusion"],
    ]
    write_findings(table, tmp_path / "findings.parquet")
    back = pq.read_table(tmp_path / "findings.parquet")
    assert back.column("state").to_pylist() == [0, 1, -1]
    assert back.schema.field("state").type == pa.int8()


def test_report_columns_cover_every_finding():
    wide = report_columns(["a", "b", "c", "d"], _parsed())
    for finding in FINDINGS:
        assert f"report_{finding}" in wide and f"{finding}_severity" in wide


def test_stage_metrics_count_states_and_agreement():
    frame = _frame()
    additions = manifest_additions(frame, _parsed(), "structured", "ignore")
    metrics = stage_metrics(frame, additions)
    assert (metrics["n_images"], metrics["n_reports"], metrics["n_without_prompt"]) == (4, 2, 1)
    assert metrics["pneumothorax"]["report"] == {"present": 1, "absent": 0, "uncertain": 0, "not_mentioned": 3}
    assert metrics["pleural_effusion"]["agreement"] == {"n": 1, "rate": 1.0, "kappa": None}
    assert state_counts(labels([1, -1, None, None])) == {"present": 1, "absent": 0, "uncertain": 1, "not_mentioned": 2}
