"""Mapped work on a Dask cluster through Prefect's Dask task runner (runtime.dask_address)."""

import shutil

import pytest

from cxrsynth.tasks.tracking import md5_digest


@pytest.mark.slow
def test_mapped_stages_on_a_local_dask_cluster_match_threads(tmp_path, tiny_project):
    distributed = pytest.importorskip("distributed")
    from cxrsynth.flows.ingest import ingest_flow
    from cxrsynth.flows.phantom import phantom_flow

    def run_stages():
        phantom_flow("params.yaml")
        ingest_flow("params.yaml")

    threads = tiny_project(tmp_path / "threads", phantom={"n_patients": 24})
    run_stages()

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            dask = tiny_project(tmp_path / "dask", phantom={"n_patients": 24},
                                runtime={"dask_address": cluster.scheduler_address})
            with distributed.get_task_stream(client) as stream:
                run_stages()
    workers_used = {record["worker"] for record in stream.data}
    assert len(stream.data) >= 2 and workers_used, "no task ran on the Dask cluster"
    for output in ("data/phantom", "data/ingest/images", "data/ingest/manifest.parquet"):
        assert md5_digest(dask / output) == md5_digest(threads / output), output
    shutil.rmtree(tmp_path)
