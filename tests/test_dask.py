"""Mapped work on a Dask cluster through Prefect's Dask task runner (runtime.dask_address)."""

import shutil

import pytest
import yaml

from cxrsynth.tasks.tracking import md5_digest
from tests.conftest import TINY_PARAMS


def _tiny_phantom_project(root, dask_address=None):
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["phantom"]["n_patients"] = 24
    params["tracking"]["mlflow_uri"] = f"sqlite:///{root / 'mlflow.db'}"
    params["runtime"]["dask_address"] = dask_address
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.mark.slow
def test_mapped_stages_on_a_local_dask_cluster_match_threads(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    from cxrsynth.flows.ingest import ingest_flow
    from cxrsynth.flows.phantom import phantom_flow

    def run_stages():
        phantom_flow("params.yaml")
        ingest_flow("params.yaml")

    threads = _tiny_phantom_project(tmp_path / "threads")
    monkeypatch.chdir(threads)
    run_stages()

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            dask = _tiny_phantom_project(tmp_path / "dask", cluster.scheduler_address)
            monkeypatch.chdir(dask)
            with distributed.get_task_stream(client) as stream:
                run_stages()
    workers_used = {record["worker"] for record in stream.data}
    assert len(stream.data) >= 2 and workers_used, "no task ran on the Dask cluster"
    for output in ("data/phantom", "data/ingest/images", "data/ingest/manifest.parquet"):
        assert md5_digest(dask / output) == md5_digest(threads / output), output
    shutil.rmtree(tmp_path)
