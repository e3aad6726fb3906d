import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cxrsynth.tasks import stages, threads, tracking
from cxrsynth.tasks.params import load_params, parse_params
from cxrsynth.tasks.stages import StageSpecError
from tests.conftest import ROOT, TINY_PARAMS

FOREACH_DAG = {"stages": {
    "prepare": {"cmd": "cxrsynth stage prepare_masks", "outs": ["data/prep"],
                "metrics": [{"metrics/prep.json": {"cache": False}}]},
    "mix": {"foreach": "${mix.ratios}", "do": {
        "cmd": "cxrsynth stage mix --variant ratio_${item}", "deps": ["data/prep/manifest.parquet"],
        "params": ["mix.seed", {"other.yaml": ["a.b"]}], "outs": ["data/mix/ratio_${item}.parquet"]}},
    "train": {"foreach": {"fast": {"epochs": 1}, "slow": {"epochs": 9}}, "do": {
        "cmd": "cxrsynth stage train_classifier --variant ${key}", "deps": ["data/mix"], "outs": ["data/${key}"]}},
}}


def _project(root: Path, dag: dict, params: dict) -> Path:
    (root / "dvc.yaml").write_text(yaml.safe_dump(dag))
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_paths_are_read_from_the_projects_dvc_yaml():
    dag = stages.load(ROOT)
    assert dag.output("prepare_masks", "manifest.parquet") == Path("data/prepare_masks/manifest.parquet")
    assert dag.input("mix@0.5", "generate", "manifest.parquet") == Path("data/generate/manifest.parquet")
    assert dag.output("train_diffusion", "checkpoints") == Path("data/train_diffusion/checkpoints")
    assert dag.stage("evaluate").metric() == Path("metrics/evaluate.json")
    assert dag.stage("train_diffusion").plot() == Path("plots/train_diffusion/loss.csv")
    assert dag.stage_for("train_classifier", "real_only").name == "train_baseline@real_only"
    assert dag.input("evaluate", "train_classifier@2") == Path("data/classifiers/ratio_2")
    # ${ingest.path} resolves against params.yaml as DVC resolves it
    assert load_params(ROOT / "params.yaml").ingest.path in dag.stage("ingest").deps


def test_foreach_stages_resolve_against_the_projects_params(tmp_path):
    root = _project(tmp_path, FOREACH_DAG, {"mix": {"ratios": [0.25, 3], "seed": 1}})
    dag = stages.load(root)
    assert sorted(dag.stages) == ["mix@0.25", "mix@3", "prepare", "train@fast", "train@slow"]
    ratio = dag.stage_for("mix", "ratio_3")
    assert ratio.name == "mix@3" and ratio.command == ("mix", "ratio_3")
    assert ratio.outs == ("data/mix/ratio_3.parquet",) and ratio.params == ("mix.seed", "a.b")
    assert dag.output("mix@0.25", "") == Path("data/mix/ratio_0.25.parquet")
    assert dag.input("mix@3", "prepare", "manifest.parquet") == Path("data/prep/manifest.parquet")
    assert dag.input("train@slow", "mix@3") == Path("data/mix/ratio_3.parquet")
    assert dag.output("train@fast") == Path("data/fast") and dag.stage("prepare").metric() == Path("metrics/prep.json")


def test_unknown_stage_or_undeclared_path_is_named(tmp_path):
    dag = stages.load(_project(tmp_path, FOREACH_DAG, {"mix": {"ratios": [1], "seed": 1}}))
    with pytest.raises(StageSpecError, match=r"dvc.yaml: no stage 'mixx'; stages are \['mix@1'"):
        dag.stage("mixx")
    with pytest.raises(StageSpecError, match="no stage run `cxrsynth stage mix --variant ratio_9`"):
        dag.stage_for("mix", "ratio_9")
    with pytest.raises(StageSpecError, match=r"stage 'prepare' declares no out holding data/elsewhere/x"):
        dag.output("prepare", "../elsewhere/x")
    with pytest.raises(StageSpecError, match=r"'train_diffusion' declares no out holding data/train_diffusion/samples; "
                                             r"its outs are \['data/train_diffusion/model'"):
        stages.load(ROOT).output("train_diffusion", "samples")
    with pytest.raises(StageSpecError, match=r"stage 'mix@1' reads data/fast \(an output of 'train@fast'\) "
                                             r"but declares no dep holding it"):
        dag.input("mix@1", "train@fast")
    with pytest.raises(StageSpecError, match="expected one stage 'mix@1' metrics file, found"):
        dag.stage("mix@1").metric()


def test_a_bad_dvc_yaml_is_named(tmp_path):
    bad = {"stages": {"s": {"cmd": "cxrsynth stage s", "outs": ["data/${nowhere.key}"]}}}
    with pytest.raises(StageSpecError, match=r"dvc.yaml: .*nowhere.key"):
        stages.load(_project(tmp_path, bad, {"mix": {}}))


def test_input_hashes_are_dvc_lock_hashes_of_the_outputs_read(tmp_path):
    lock = {"schema": "2.0", "stages": {
        "prepare_masks": {"cmd": "x", "outs": [{"path": "data/prepare_masks", "hash": "md5", "md5": "aa.dir"}]},
        "train_baseline@real_only": {"cmd": "x", "outs": [{"path": "data/classifiers/real_only", "md5": "bb.dir"}]},
        "train_classifier@1": {"cmd": "x", "outs": [{"path": "data/classifiers/ratio_1", "md5": "cc.dir"}]},
        "mix@1": {"cmd": "x", "outs": [{"path": "data/mix/ratio_1.parquet", "md5": "dd"}]},
    }}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    hashes = stages.lock_hashes(tmp_path)
    assert hashes["data/mix/ratio_1.parquet"] == "dd" and len(hashes) == 4
    read = ["data/prepare_masks/manifest.parquet", "data/classifiers", "tasks/metrics", "data/generate"]
    assert stages.input_hashes(read, hashes) == {
        "data/classifiers/ratio_1": "cc.dir", "data/classifiers/real_only": "bb.dir", "data/prepare_masks": "aa.dir"}
    assert stages.lock_hashes(tmp_path / "nowhere") == {}


def test_stage_run_logs_declared_params_and_dvc_hashes(tmp_path, monkeypatch):
    import mlflow

    lock = {"stages": {"prepare_masks": {"outs": [{"path": "data/prepare_masks", "md5": "aa.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["tracking"]["mlflow_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = parse_params(raw)
    spec = stages.load(ROOT).stage("mix@0.5")
    with tracking.stage_run(spec, params, extra_params={"variant": "ratio_0.5"}) as run:
        run_id = run.info.run_id
    logged = mlflow.MlflowClient(params.tracking.mlflow_uri).get_run(run_id).data
    assert logged.params == {"seed": str(params.seed), "mix.cap_per_finding": str(params.mix.cap_per_finding),
                             "mix.seed": str(params.mix.seed), "variant": "ratio_0.5",
                             "evaluate.train_sites": str(params.evaluate.train_sites),
                             # this process's thread setting, logged by every stage run
                             "runtime.threads": str(torch.get_num_threads()),
                             "runtime.usable_cpus": str(len(os.sched_getaffinity(0))),
                             "runtime.omp_wait_policy": threads.wait_policy(),
                             "runtime.adaptive_threads": str(threads.adaptive())}
    digests = {k: v for k, v in logged.tags.items() if k.startswith("cxrsynth.input_md5.")}
    assert digests == {"cxrsynth.input_md5.data/prepare_masks": "aa.dir"}  # generate has no lock entry yet
    assert logged.tags["cxrsynth.stage"] == "mix" and logged.tags["cxrsynth.dvc_stage"] == "mix@0.5"
    assert 0 < logged.metrics["runtime.process_s"] < 24 * 3600 and logged.metrics["runtime.peak_rss_mib"] > 50  # torch is loaded


def test_peak_rss_counts_what_the_process_held():
    held_mib = 768  # more than importing torch and MLflow peaks at
    script = ("from cxrsynth.tasks.tracking import peak_rss_mib; before = peak_rss_mib(); "
              f"held = b'x' * ({held_mib} * 2**20); del held; print(before, peak_rss_mib())")
    before, after = map(float, subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                              check=True).stdout.split())
    assert after >= max(before, held_mib)  # freed again, still the peak


def test_child_runs_and_the_pipeline_parent_run(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["tracking"]["mlflow_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = parse_params(raw)
    tracking.configure(params)
    with mlflow.start_run(run_name="pipeline") as pipeline:
        pipeline_id = pipeline.info.run_id
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    assert tracking.log_to_pipeline_run({"a": 1.0}, {}) is None  # a manual stage run: no parent to log on
    monkeypatch.setenv(tracking.PARENT_RUN_ENV, pipeline_id)
    spec = stages.load(ROOT).stage("mix@0.5")
    with tracking.stage_run(spec, params) as variant:
        with tracking.child_run("mix:seed_1", {"seed": 1}, tags={"cxrsynth.variant": "ratio_0.5"}) as child:
            child_id = child.info.run_id
    assert tracking.log_to_pipeline_run({"verdict.nodule.auroc": 0.7, "skipped": None}, {"verdict.nodule.verdict": "helps"},
                                        note="# table", texts={"verdict.md": "# table"}) == pipeline_id
    client = mlflow.MlflowClient(params.tracking.mlflow_uri)
    logged = client.get_run(child_id).data
    assert logged.tags["mlflow.parentRunId"] == variant.info.run_id and logged.params == {"seed": "1"}
    assert logged.tags["cxrsynth.stage"] == "mix" and logged.tags["cxrsynth.variant"] == "ratio_0.5"
    parent = client.get_run(pipeline_id).data
    assert parent.metrics == {"verdict.nodule.auroc": 0.7} and parent.tags["verdict.nodule.verdict"] == "helps"
    assert parent.tags["mlflow.note.content"] == "# table"
    assert [a.path for a in client.list_artifacts(pipeline_id)] == ["verdict.md"]
    with pytest.raises(RuntimeError, match="needs an active parent run"):
        with tracking.child_run("orphan", {}):
            pass


def test_declared_params_cover_sections_and_dotted_keys(tiny_params):
    values = tracking.declared_params(tiny_params, ("seed", "ingest.image_size", "mix.augmentation"))
    assert values["seed"] == tiny_params.seed and values["ingest.image_size"] == tiny_params.ingest.image_size
    assert values["mix.augmentation.rotate_degrees"] == tiny_params.mix.augmentation.rotate_degrees
    with pytest.raises(StageSpecError, match="param 'mix.nothing' is not in the params model"):
        tracking.declared_params(tiny_params, ("mix.nothing",))


def test_path_constants_left_in_tasks_agree_with_dvc_yaml():
    """Modules rewritten in parallel still name these paths; until they take them from the spec,
    they must say what dvc.yaml says."""
    from cxrsynth.flows import evaluate
    from cxrsynth.tasks.ingest import images as ingest
    from cxrsynth.tasks.diffusion import generation, labels, train_stage

    dag = stages.load(ROOT)
    assert Path(ingest.OUT_DIR) == dag.output("ingest")
    assert generation.OUT == dag.output("generate")
    assert train_stage.MODEL_DIR == dag.input("generate", "train_diffusion", "model")
    assert train_stage.CHECKPOINT_DIR == dag.output("train_diffusion", "checkpoints")
    assert train_stage.LOSS_CSV == dag.stage("train_diffusion").plot()
    assert train_stage.AUTOENCODER_DIR == dag.input("train_diffusion", "train_autoencoder", "model")
    assert labels.LESIONS == dag.input("train_diffusion", "prepare_masks", "lesions.parquet")
    assert evaluate.REPORTS == dag.output("evaluate")


def test_a_stage_with_several_plots_names_the_one_asked_for():
    evaluate = stages.load(ROOT).stage("evaluate")
    assert evaluate.plot("auroc_by_ratio.csv") == Path("plots/evaluate/auroc_by_ratio.csv")
    with pytest.raises(stages.StageSpecError, match="one stage 'evaluate' plots file"):
        evaluate.plot()
