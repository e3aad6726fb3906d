"""Maps the repository's top-level folders onto one installed namespace, ``cxrsynth``.

flows/, tasks/ and models/ stay where the design card puts them; installed, they are
``cxrsynth.flows``, ``cxrsynth.tasks`` and ``cxrsynth.models``, so the project never takes a generic
top-level name such as ``models`` that another package may own. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

FOLDERS = ("flows", "tasks", "models")

setup(
    package_dir={f"cxrsynth.{folder}": folder for folder in FOLDERS},
    packages=[f"cxrsynth.{folder}" for folder in FOLDERS]
    + [f"cxrsynth.{folder}.{sub}" for folder in FOLDERS for sub in find_packages(folder)],
    package_data={"cxrsynth.tasks": ["**/*.j2"]},
)
