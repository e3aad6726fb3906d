"""Every knob of the pipeline as one typed model, validated at stage start.

``params.yaml`` is the default profile (what ``dvc repro`` runs), ``tests/params.tiny.yaml``
the smoke profile; the README documents the full GPU profile. An unknown or ill-typed key
fails with a message naming the key's dotted path and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.findings import FINDINGS, check_finding

ConditionType = Literal["label", "mask", "text", "label+mask", "label+text", "mask+text", "label+mask+text"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_finding_keys(mapping: dict[str, float], where: str) -> dict[str, float]:
    for name in mapping:
        check_finding(name, where)
    return mapping


class PhantomParams(Section):
    """The built-in procedural chest radiograph collection (the default data source)."""

    n_patients: int = Field(1500, ge=4)
    repeat_study_fraction: float = Field(0.2, ge=0, le=1, description="patients with a second study")
    size: int = Field(256, ge=32, description="native pixel size of the square DICOM images")
    pixel_spacing_mm: float = Field(1.4, gt=0, description="at native size")
    sites: int = Field(2, ge=1, le=2)
    prevalence: dict[str, float] = Field(
        default_factory=lambda: {
            "cardiomegaly": 0.12, "pleural_effusion": 0.10, "pneumothorax": 0.03,
            "nodule": 0.03, "atelectasis": 0.10, "consolidation": 0.08,
        }
    )
    lesion_contrast: float = Field(1.0, gt=0, description="scales every lesion's visibility")
    report_only_fraction: float = Field(
        0.1, ge=0, le=1, description="positive findings left blank in the label CSV (only the report names them)"
    )
    uncertain_fraction: float = Field(
        0.1, ge=0, le=1, description="positive findings the report hedges (\"possible ...\"; -1.0 in the label CSV)"
    )
    mask_fraction: float = Field(0.7, ge=0, le=1, description="positive lesions shipped with a mask file")
    workers: int = Field(2, ge=1, description="chunks of patients generated in parallel (threads, or Dask when configured)")
    seed: int = Field(0, ge=0)

    @field_validator("prevalence")
    @classmethod
    def _known_findings(cls, value: dict[str, float]) -> dict[str, float]:
        return _check_finding_keys(value, "phantom.prevalence")


class SplitParams(Section):
    train: float = Field(0.7, gt=0)
    val: float = Field(0.1, gt=0)
    test: float = Field(0.2, gt=0)

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitParams":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class IngestParams(Section):
    source: Literal["phantom", "chexpert", "mimic", "nih", "siim", "folder"] = "phantom"
    path: str = Field("data/phantom", description="root of the source collection")
    image_size: int = Field(64, ge=16, description="working resolution: square, aspect kept, padded")
    split: SplitParams = SplitParams()
    views: list[str] = Field(default_factory=lambda: ["PA", "AP"], description="views kept")
    max_images: int | None = Field(None, ge=1, description="cap for quick runs on large sources")
    workers: int = Field(2, ge=1)
    sample_grid: int = Field(16, ge=1, description="images in the MLflow sample grid")


class RadGraphParams(Section):
    model_type: str = "radgraph-xl"
    model_cache_dir: str | None = Field(None, description="folder holding <model_type>/{config.json, vocabulary/, weights.th}")
    batch_size: int = Field(8, ge=1)


class ParseReportsParams(Section):
    backend: Literal["rules", "radgraph"] = "rules"
    radgraph: RadGraphParams = RadGraphParams()
    uncertain_policy: Literal["positive", "negative", "ignore"] = "ignore"
    prefer: Literal["structured", "report"] = Field(
        "structured", description="which source wins where both give a state"
    )


class PrepareMasksParams(Section):
    min_area_px: int = Field(2, ge=0, description="lesions smaller than this at working size are dropped and reported")
    workers: int = Field(2, ge=1, description="images prepared in parallel (threads, or Dask when configured)")
    overlay_images: int = Field(8, ge=0, description="masked images drawn in the MLflow overlay figure")


class UNetParams(Section):
    channels: list[int] = Field(default_factory=lambda: [32, 64, 128])
    attention_levels: list[bool] = Field(default_factory=lambda: [False, True, True])
    num_res_blocks: int = Field(1, ge=1)
    num_head_channels: int = Field(32, ge=1)
    norm_num_groups: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _levels_match(self) -> "UNetParams":
        if len(self.channels) != len(self.attention_levels):
            raise ValueError("channels and attention_levels must have the same length")
        return self


class TextEncoderParams(Section):
    kind: Literal["learned", "pretrained"] = "learned"
    path: str | None = Field(None, description="local folder of a pretrained transformers encoder (kind=pretrained)")
    source: Literal["prompt", "report"] = Field("prompt", description="which text conditions the model")
    max_tokens: int = Field(32, ge=4)
    dim: int = Field(128, ge=8)
    layers: int = Field(2, ge=1)
    min_word_count: int = Field(2, ge=1, description="rarer words map to the unknown token")


class ConditionDropout(Section):
    label: float = Field(0.15, ge=0, le=1)
    mask: float = Field(0.15, ge=0, le=1)
    text: float = Field(0.15, ge=0, le=1)


class LossParams(Section):
    lesion_weight: float = Field(2.0, ge=0, description="extra weight of the noise loss inside lesion masks")
    ssim_weight: float = Field(0.1, ge=0, description="1-SSIM of the predicted clean image inside the lesion box")
    snr_gamma: float = Field(
        5.0, ge=0, description="weight the SSIM term per image by min(SNR, gamma)/gamma (Min-SNR); 0: unweighted"
    )


class DiffusionTrainParams(Section):
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    checkpoint_every: int = Field(250, ge=1)
    sample_every: int = Field(500, ge=1)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    num_workers: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="largest gradient norm; 0 turns clipping off")
    cache_images: bool = Field(True, description="keep decoded training images in memory (small sets)")
    sample_steps: int = Field(20, ge=1, description="DPM-Solver steps of the sample grids logged while training")
    sample_guidance: float = Field(2.0, ge=0, description="guidance scale of those grids")
    processes: int = Field(
        1, ge=1, description="data-parallel training processes, one per GPU, launched through torchrun; 1: a single process"
    )


class DiffusionParams(Section):
    timesteps: int = Field(1000, ge=10)
    schedule: Literal["linear", "cosine"] = "cosine"
    prediction: Literal["epsilon", "v_prediction"] = "v_prediction"
    unet: UNetParams = UNetParams()
    conditions: list[Literal["label", "mask", "text"]] = Field(default_factory=lambda: ["label", "mask", "text"])
    label_dim: int = Field(128, ge=8, description="width of label and text context tokens")
    text_encoder: TextEncoderParams = TextEncoderParams()
    dropout: ConditionDropout = ConditionDropout()
    loss: LossParams = LossParams()
    train: DiffusionTrainParams = DiffusionTrainParams()


class GenerateParams(Section):
    rare_findings: list[str] = Field(default_factory=lambda: ["pneumothorax", "nodule"])
    target_share: float = Field(0.1, gt=0, lt=1, description="share of the training split each rare finding is brought up to")
    max_per_finding: int = Field(400, ge=0)
    # Mask-conditioned types by default: at the CPU profile's training budget only they put the lesion
    # where it is asked for; label- or text-only generation needs a longer (GPU) training run.
    condition_types: list[ConditionType] = Field(default_factory=lambda: ["label+mask+text", "label+mask", "mask+text"])
    sampler: Literal["ddpm", "ddim", "dpm_solver"] = "dpm_solver"
    steps: int = Field(20, ge=1)
    guidance_scale: float = Field(2.0, ge=0)
    batch_size: int = Field(32, ge=1)
    mask_shift: float = Field(0.1, ge=0, le=0.5, description="largest move, as a fraction of the image side")
    mask_scale: tuple[float, float] = (0.8, 1.25)
    mask_flip: bool = True
    mask_inside: float = Field(
        0.95, gt=0, le=1, description="share of a moved lesion that must stay inside the lung-field prior"
    )
    seed: int = 0

    @field_validator("mask_scale")
    @classmethod
    def _ordered_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("mask_scale must be (low, high) with 0 < low <= high")
        return value

    @field_validator("rare_findings")
    @classmethod
    def _known_findings(cls, value: list[str]) -> list[str]:
        for name in value:
            check_finding(name, "generate.rare_findings")
        return value


class AugmentationParams(Section):
    """Classical augmentation of the classical_aug baseline, applied on the fly in training.

    No flips: a left-right flip moves the heart to the wrong side and an up-down flip puts the
    diaphragm on top, so neither gives a chest that exists."""

    prob: float = Field(0.5, ge=0, le=1, description="chance that each transform fires on an image")
    rotate_degrees: float = Field(7.0, ge=0, le=30)
    translate_fraction: float = Field(0.05, ge=0, le=0.3, description="largest shift, as a fraction of the image side")
    zoom: float = Field(0.05, ge=0, le=0.3, description="largest relative zoom in or out")
    gamma: tuple[float, float] = Field((0.8, 1.25), description="contrast gamma range")
    intensity_scale: float = Field(0.1, ge=0, le=1, description="largest relative brightness change")
    intensity_shift: float = Field(0.05, ge=0, le=1, description="largest brightness offset")
    noise_std: float = Field(0.01, ge=0, le=0.2, description="Gaussian noise standard deviation")

    @field_validator("gamma")
    @classmethod
    def _ordered_positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("gamma must be (low, high) with 0 < low <= high")
        return value


class MixParams(Section):
    # int | float keeps a ratio written as 1 an int, so variant names match what dvc.yaml renders.
    ratios: list[int | float] = Field(default_factory=lambda: [0.5, 1, 2], description="synthetic images per real image of each rare finding")
    baselines: list[Literal["real_only", "classical_aug", "class_weighted"]] = Field(
        default_factory=lambda: ["real_only", "classical_aug", "class_weighted"]
    )
    cap_per_finding: int = Field(1000, ge=0)
    class_balance: Literal["pos_weight", "oversample"] = Field(
        "pos_weight", description="class_weighted baseline: BCE pos_weight per finding, or a sampler oversampling rare positives"
    )
    augmentation: AugmentationParams = AugmentationParams()
    seed: int = 0

    @field_validator("ratios")
    @classmethod
    def _positive(cls, value: list[int | float]) -> list[int | float]:
        if any(r <= 0 for r in value):
            raise ValueError("every ratio must be > 0 (real_only is a baseline)")
        if len(set(value)) != len(value):
            raise ValueError("ratios must be distinct")
        return value


def variant_name(ratio: int | float) -> str:
    """The variant a synthetic ratio builds, named as dvc.yaml's foreach renders it."""
    return f"ratio_{ratio}"


class ClassifierParams(Section):
    architecture: Literal["densenet_small", "densenet121"] = "densenet_small"
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(4, ge=1, description="epochs without validation AUROC gain before stopping")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: load in the main process)")
    seed: int = 0


class EvaluateParams(Section):
    specificity: float = Field(0.9, gt=0, lt=1)
    bootstrap: int = Field(1000, ge=0)
    memorisation_threshold: float = Field(0.95, gt=0, le=1)
    prdc_k: int = Field(5, ge=1)
    feature_network: str | None = Field(None, description="local path of a pretrained radiograph network; default: the real-only classifier")
    segmenter_epochs: int = Field(10, ge=1, description="epochs of the lesion segmenter behind mask adherence")
    reader_study_images: int = Field(20, ge=1, description="real and as many synthetic images in the reader study")
    embedding: Literal["pca", "tsne"] = "pca"
    batch_size: int = Field(64, ge=1)
    seed: int = 0


class TrackingParams(Section):
    mlflow_uri: str = "sqlite:///mlflow.db"
    experiment: str = "cxrsynth"


class RuntimeParams(Section):
    dask_address: str | None = Field(None, description="Dask scheduler address; threads when unset")
    torch_threads: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class Params(Section):
    seed: int = 0
    phantom: PhantomParams = PhantomParams()
    ingest: IngestParams = IngestParams()
    parse_reports: ParseReportsParams = ParseReportsParams()
    prepare_masks: PrepareMasksParams = PrepareMasksParams()
    diffusion: DiffusionParams = DiffusionParams()
    generate: GenerateParams = GenerateParams()
    mix: MixParams = MixParams()
    classifier: ClassifierParams = ClassifierParams()
    evaluate: EvaluateParams = EvaluateParams()
    tracking: TrackingParams = TrackingParams()
    runtime: RuntimeParams = RuntimeParams()


class ParamsError(ValueError):
    """A params file that does not fit the model; the message names each bad key."""


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def parse_params(raw: dict, source: str = "params") -> Params:
    """Validate a params mapping; raise ParamsError naming every bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        lines = "\n  ".join(_describe(error) for error in exc.errors())
        raise ParamsError(f"{source} is invalid:\n  {lines}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params YAML file."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    with path.open() as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return parse_params(raw, str(path))


def section_dict(params: Params, name: str) -> dict:
    """One section as a plain dict (for logging a stage's params)."""
    return getattr(params, name).model_dump(mode="json")


__all__ = ["FINDINGS", "Params", "ParamsError", "load_params", "parse_params", "section_dict"]
