"""The shared project fixtures: what a stage test's project folder holds."""

from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PARAMS, write_tiny_params


def test_tiny_params_merge_sections_and_keep_mlflow_in_the_folder(tmp_path):
    path = write_tiny_params(tmp_path / "project", phantom={"n_patients": 24}, diffusion={"train": {"steps": 4}})
    written, tiny = yaml.safe_load(path.read_text()), yaml.safe_load(TINY_PARAMS.read_text())
    assert path == tmp_path / "project" / "params.yaml"
    assert written["phantom"] == {**tiny["phantom"], "n_patients": 24}
    assert written["diffusion"]["train"] == {**tiny["diffusion"]["train"], "steps": 4}
    assert written["diffusion"]["unet"] == tiny["diffusion"]["unet"]
    assert written["tracking"]["mlflow_uri"] == f"sqlite:///{tmp_path / 'project' / 'mlflow.db'}"


def test_tiny_params_refuse_a_key_the_profile_lacks(tmp_path):
    with pytest.raises(KeyError, match=r"diffusion\.train\.stepz: not a key"):
        write_tiny_params(tmp_path, diffusion={"train": {"stepz": 4}})


def test_tiny_project_is_the_working_directory(tmp_path, tiny_project):
    root = tiny_project(tmp_path / "elsewhere", seed=3)
    assert Path.cwd() == root == tmp_path / "elsewhere"
    assert yaml.safe_load(Path("params.yaml").read_text())["seed"] == 3
