"""The DAG as ``dvc.yaml`` declares it: each stage's command, deps, outs, params, metrics and plots.

``dvc.yaml`` is the only place a stage's paths are written. It is read with DVC's own parser, so
``${...}`` and ``foreach`` resolve exactly as ``dvc repro`` resolves them (against ``params.yaml``
beside it), and flows and tasks take every data path from here: a stage's outputs by the stage's
name (``dag.output("prepare_masks", "manifest.parquet")``), another stage's outputs as its inputs,
checked against its declared deps (``dag.input("mix@0.5", "prepare_masks", "manifest.parquet")``),
so code can read nothing DVC does not know the stage depends on.

``input_hashes`` gives the hashes DVC recorded in ``dvc.lock`` for the outputs a stage reads; under
``dvc repro`` the producing stages have just committed them, so nothing is hashed a second time.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import yaml

DVC_FILE = "dvc.yaml"
LOCK_FILE = "dvc.lock"
# The source tree an editable install runs from: scratch projects (tests) without their own
# dvc.yaml use the project's.
SOURCE_ROOT = Path(__file__).resolve().parents[1]
COMMAND_PREFIX = ("cxrsynth", "stage")


class StageSpecError(ValueError):
    """dvc.yaml cannot be read, or a stage or path asked for is not what dvc.yaml declares."""


@dataclass(frozen=True)
class StageSpec:
    """One resolved stage of dvc.yaml (a ``foreach`` item is one stage, named ``name@item``)."""

    name: str
    cmd: str
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()

    @property
    def command(self) -> tuple[str | None, str | None]:
        """(stage flow, variant) that ``cmd`` runs: ``cxrsynth stage mix --variant ratio_1`` -> (mix, ratio_1)."""
        tokens = shlex.split(self.cmd)
        if tuple(tokens[:2]) != COMMAND_PREFIX or len(tokens) < 3:
            return None, None
        variant = None
        for position, token in enumerate(tokens[3:], start=3):
            if token == "--variant" and position + 1 < len(tokens):
                variant = tokens[position + 1]
            elif token.startswith("--variant="):
                variant = token.split("=", 1)[1]
        return tokens[2], variant

    @property
    def home(self) -> PurePosixPath:
        """The folder a stage's outputs share: its one out, or the common parent of several."""
        if not self.outs:
            raise StageSpecError(f"{DVC_FILE}: stage {self.name!r} declares no outs")
        parts = [PurePosixPath(out).parts for out in self.outs]
        if len(parts) == 1:
            return PurePosixPath(*parts[0])
        common = []
        for level in zip(*parts):
            if len(set(level)) > 1:
                break
            common.append(level[0])
        return PurePosixPath(*common)

    def metric(self) -> Path:
        return Path(_only(self.metrics, f"stage {self.name!r} metrics file"))

    def plot(self, file_name: str | None = None) -> Path:
        """The stage's one plots file, or the one called ``file_name`` when it declares several."""
        plots = self.plots if file_name is None else tuple(p for p in self.plots if PurePosixPath(p).name == file_name)
        return Path(_only(plots, f"stage {self.name!r} plots file" + (f" named {file_name}" if file_name else "")))


def _only(values: tuple[str, ...], what: str) -> str:
    if len(values) != 1:
        raise StageSpecError(f"{DVC_FILE}: expected one {what}, found {list(values)}")
    return values[0]


def _covers(declared: str, path: PurePosixPath) -> bool:
    """Whether ``path`` is the declared path or lies inside it."""
    declared_path = PurePosixPath(declared)
    return path == declared_path or declared_path in path.parents


class Dag:
    """Every stage of dvc.yaml by name, with path look-ups that check what dvc.yaml declares."""

    def __init__(self, stages: Mapping[str, StageSpec], source: str | Path = DVC_FILE) -> None:
        self.stages = dict(stages)
        self.source = str(source)

    def stage(self, name: str) -> StageSpec:
        if name not in self.stages:
            raise StageSpecError(f"{self.source}: no stage {name!r}; stages are {sorted(self.stages)}")
        return self.stages[name]

    def stage_for(self, command: str, variant: str | None = None) -> StageSpec:
        """The stage whose cmd is ``cxrsynth stage <command> [--variant <variant>]``."""
        matches = [spec for spec in self.stages.values() if spec.command == (command, variant)]
        if len(matches) != 1:
            wanted = " ".join([*COMMAND_PREFIX, command, *(["--variant", variant] if variant else [])])
            found = "no stage" if not matches else f"stages {[spec.name for spec in matches]}"
            raise StageSpecError(f"{self.source}: {found} run `{wanted}`; stages are {sorted(self.stages)}")
        return matches[0]

    def output(self, stage: str, relative: str = "") -> Path:
        """``relative`` inside the stage's outputs (its one out, or the folder its outs share)."""
        spec = self.stage(stage)
        path = PurePosixPath(posixpath.normpath(spec.home / relative)) if relative else spec.home
        if not any(_covers(out, path) for out in spec.outs):
            raise StageSpecError(f"{self.source}: stage {stage!r} declares no out holding {path.as_posix()}; "
                                 f"its outs are {list(spec.outs)}")
        return Path(path)

    def input(self, stage: str, producer: str, relative: str = "") -> Path:
        """An output of ``producer`` that ``stage`` reads; it must lie inside one of ``stage``'s deps."""
        path = self.output(producer, relative)
        spec = self.stage(stage)
        if not any(_covers(dep, PurePosixPath(path.as_posix())) for dep in spec.deps):
            raise StageSpecError(f"{self.source}: stage {stage!r} reads {path.as_posix()} (an output of "
                                 f"{producer!r}) but declares no dep holding it; its deps are {list(spec.deps)}")
        return path


def _names(entries: Iterable) -> tuple[str, ...]:
    """Paths or param keys of a resolved list: plain strings, or one-key mappings (``{path: {cache: false}}``,
    ``{params_file: [keys]}``)."""
    names: list[str] = []
    for entry in entries or ():
        if isinstance(entry, Mapping):
            for key, value in entry.items():
                names += [str(v) for v in value] if isinstance(value, list) else [str(key)]
        else:
            names.append(str(entry))
    return tuple(names)


def _spec(name: str, definition: Mapping) -> StageSpec:
    return StageSpec(
        name=name, cmd=str(definition.get("cmd", "")),
        deps=_names(definition.get("deps")), outs=_names(definition.get("outs")),
        params=_names(definition.get("params")), metrics=_names(definition.get("metrics")),
        plots=_names(definition.get("plots")),
    )


def dvc_file(root: str | Path = ".") -> Path:
    """The project's dvc.yaml: in ``root``, else (a scratch project) the source tree's."""
    for candidate in (Path(root) / DVC_FILE, SOURCE_ROOT / DVC_FILE):
        if candidate.is_file():
            return candidate
    raise StageSpecError(f"{Path(root) / DVC_FILE}: not found (run stages from the project root)")


def load(root: str | Path = ".") -> Dag:
    """Every stage of dvc.yaml, resolved by DVC against ``root``'s params.yaml."""
    from dvc.exceptions import DvcException
    from dvc.fs import LocalFileSystem
    from dvc.parsing import DataResolver

    source = dvc_file(root)
    try:
        definition = yaml.safe_load(source.read_text()) or {}
        # DVC's parser needs only a filesystem and config from a repo: a scratch project has no .dvc/.
        resolver = DataResolver(SimpleNamespace(fs=LocalFileSystem(), config={}), str(Path(root).resolve()), definition)
        stages = {}
        for key in resolver.get_keys():
            stages.update({name: _spec(name, body) for name, body in resolver.resolve_one(key).items()})
    except (OSError, yaml.YAMLError) as exc:
        raise StageSpecError(f"{source}: cannot be read: {exc}") from None
    except DvcException as exc:  # ${...} naming no param, a bad foreach: DVC's message names the stage
        raise StageSpecError(f"{source}: {exc}") from None
    return Dag(stages, source)


def lock_hashes(root: str | Path = ".") -> dict[str, str]:
    """Every stage output's hash as dvc.lock records it (path -> md5, ``.dir`` for folders); empty
    when DVC has not run yet."""
    lock = Path(root) / LOCK_FILE
    if not lock.is_file():
        return {}
    try:
        content = yaml.safe_load(lock.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StageSpecError(f"{lock}: not valid YAML: {exc}") from None
    hashes = {}
    for stage in (content.get("stages") or {}).values():
        for out in stage.get("outs") or ():
            if out.get("md5"):
                hashes[str(out["path"])] = str(out["md5"])
    return hashes


def input_hashes(paths: Iterable[str | Path], hashes: Mapping[str, str]) -> dict[str, str]:
    """The recorded outputs that ``paths`` read: an output holding a path, or held by it (a dep on a
    folder of several outputs), each with its hash; paths no stage produces (code) are left out."""
    found: dict[str, str] = {}
    for path in paths:
        read = PurePosixPath(Path(path).as_posix())
        for out, digest in hashes.items():
            if _covers(out, read) or _covers(read.as_posix(), PurePosixPath(out)):
                found[out] = digest
    return dict(sorted(found.items()))
