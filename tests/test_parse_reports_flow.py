import json

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from cxrsynth.tasks import manifest

REPORTS = [
    "FINDINGS: Small right apical pneumothorax. No pleural effusion.\nIMPRESSION: Small right pneumothorax.",
    "FINDINGS: Possible left lower lobe consolidation. Heart size is normal.\nIMPRESSION: Possible pneumonia.",
    "FINDINGS: Moderate cardiomegaly. Bibasilar atelectasis.\nIMPRESSION: Cardiomegaly.",
    "FINDINGS: 8 mm nodule in the left upper lobe.\nIMPRESSION: Pulmonary nodule.",
    "FINDINGS: Lungs are clear.\nIMPRESSION: No acute cardiopulmonary abnormality.",
    None,
]


def _ingest_manifest(n=24):
    rows = []
    for i in range(n):
        rows.append({
            "image_id": f"img{i:03d}", "patient_id": f"p{i // 2:03d}", "split": ("train", "val", "test")[(i // 2) % 3],
            "source": "real", "dataset": "phantom", "path": f"data/ingest/images/img{i:03d}.png",
            "report": REPORTS[i % len(REPORTS)],
            "structured_pneumothorax": 1 if i % len(REPORTS) == 0 else None,
            "structured_consolidation": 0 if i % 4 == 1 else None,
        })
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_parse_reports_flow_on_a_tiny_project(tmp_path, tiny_project):
    from cxrsynth.flows.parse_reports import parse_reports_flow

    tiny_project(parse_reports={"uncertain_policy": "positive"})
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    manifest.write(_ingest_manifest(), "data/ingest/manifest.parquet", "ingest")
    (tmp_path / "data" / "parse_reports").mkdir()
    (tmp_path / "data" / "parse_reports" / "stale.txt").write_text("from an earlier run")

    metrics = parse_reports_flow("params.yaml")

    written = manifest.read("data/parse_reports/manifest.parquet")
    manifest.validate(written, "parse_reports")
    assert not (tmp_path / "data" / "parse_reports" / "stale.txt").exists()
    first = written.set_index("image_id").loc["img000"]
    ptx = [first["pneumothorax"], first["pneumothorax_laterality"], first["pneumothorax_location"]]
    assert ptx == [1, "right", "apical"]
    assert first["prompt"] == "small right apical pneumothorax; no pleural effusion"
    hedged = written.set_index("image_id").loc[["img001", "img007"]]
    assert hedged["report_consolidation"].tolist() == [-1, -1]
    assert hedged["consolidation"].tolist() == [0, 1]  # structured label wins; else uncertain_policy: positive
    assert written.set_index("image_id").loc["img005", "prompt"] == "no acute cardiopulmonary abnormality"

    table = pq.read_table("data/parse_reports/findings.parquet").to_pandas()
    assert set(table.columns) == {"image_id", "finding", "state", "laterality", "location", "severity", "sentence"}
    assert len(table[table["image_id"] == "img000"]) == 2

    on_disk = json.loads((tmp_path / "metrics" / "parse_reports.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["n_images"] == 24 and on_disk["backend"] == "rules"
    assert on_disk["pneumothorax"]["agreement"] == {"n": 4, "rate": 1.0, "kappa": None}
    assert on_disk["consolidation"]["agreement"]["n"] == 2

    mlflow.set_tracking_uri(params["tracking"]["mlflow_uri"])
    runs = mlflow.search_runs(experiment_names=[params["tracking"]["experiment"]])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.parse_reports.uncertain_policy"] == "positive"
    assert run["metrics.cardiomegaly.final.present"] == 4
