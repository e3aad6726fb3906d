"""The project installs under one namespace, ``cxrsynth``, and takes no generic top-level name."""

from __future__ import annotations

import ast
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FOLDERS = ("flows", "tasks", "models")
SOURCE_FOLDERS = (*PROJECT_FOLDERS, "tests", "benchmarks")


def bare_project_imports(source: str) -> list[str]:
    """The modules a file imports as ``flows``/``tasks``/``models`` instead of ``cxrsynth.…``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in PROJECT_FOLDERS]
    return found


def test_bare_project_imports_are_found():
    source = "import tasks.io\nfrom models import x\nfrom cxrsynth.tasks import io\nimport modelsx\n"
    assert bare_project_imports(source) == ["tasks.io", "models"]


def test_no_module_imports_the_folders_by_their_bare_names():
    offenders = {
        str(path.relative_to(ROOT)): bare
        for folder in SOURCE_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        if (bare := bare_project_imports(path.read_text()))
    }
    assert offenders == {}


def install_into_fresh_venv(tmp_path: Path) -> Path:
    """A non-editable install of a copy of the project into a new venv; returns its python."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, project / name)
    for folder in PROJECT_FOLDERS:
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    environment = tmp_path / "fresh"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                    str(project)], check=True, capture_output=True, text=True)
    wheel, = (tmp_path / "dist").glob("cxrsynth-*.whl")
    subprocess.run([*pip, "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, text=True)
    # The project's dependencies come from this test's environment; only its directory is added,
    # so the editable install of the working tree there stays out of the fresh interpreter.
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    (fresh_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.mark.slow
def test_installs_beside_a_foreign_top_level_models_package(tmp_path):
    python = install_into_fresh_venv(tmp_path)
    user_code = tmp_path / "user"
    (user_code / "models").mkdir(parents=True)
    (user_code / "models" / "__init__.py").write_text("OWNER = 'somebody else'\n")
    probe = (
        "import models, cxrsynth.models.classifier as classifier, cxrsynth.flows.cli as cli, cxrsynth.tasks.io as io\n"
        "from cxrsynth.tasks.params import load_params\n"
        "print(models.OWNER); print(classifier.__file__); print(cli.__file__); print(io.__file__)\n"
    )
    completed = subprocess.run([str(python), "-c", probe], cwd=user_code, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    owner, *project_files = completed.stdout.splitlines()
    assert owner == "somebody else"
    fresh = str(tmp_path / "fresh")
    assert all(path.startswith(fresh) and "/site-packages/cxrsynth/" in path for path in project_files)
