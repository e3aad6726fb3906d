"""Every knob of the pipeline as one typed model, validated at stage start.

``params.yaml`` is the default profile (what ``dvc repro`` runs), ``tests/params.tiny.yaml``
the smoke profile; the README documents the full GPU profile. An unknown or ill-typed key
fails with a message naming the key's dotted path and what was expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from cxrsynth.tasks.findings import FINDINGS, check_finding

ConditionType = Literal["label", "mask", "text", "label+mask", "label+text", "mask+text", "label+mask+text"]


def _false_is_no(value: object) -> object:
    # YAML 1.1 reads a bare `no` as false, and `dvc exp run -S` rewrites params.yaml without the quotes
    # that kept "no" a string.
    return "no" if value is False else value


MixedPrecision = Annotated[Literal["auto", "no", "fp16", "bf16"], BeforeValidator(_false_is_no)]
MIXED_PRECISION = ("autocast of the forward passes (weights, optimizer state and losses stay float32); auto: bf16 on a CPU "
                   "with AMX or AVX-512 BF16 and on a CUDA card that has it (else fp16 there), float32 elsewhere; "
                   "bf16 forces it; fp16: CUDA only; no: float32")


def positive_range(value: tuple[float, float], name: str) -> tuple[float, float]:
    if not 0 < value[0] <= value[1]:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high")
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_finding_keys(mapping: dict[str, float], where: str) -> dict[str, float]:
    for name in mapping:
        check_finding(name, where)
    return mapping


class PhantomTestParams(Section):
    """The phantom's test collection: patients of its own that only the test split holds."""

    min_positives_rare: int = Field(
        200, ge=0,
        description="test images stating each rare finding (generate.rare_findings) present, unhedged: patients are "
        "drawn until every minimum is met; 0 for both minimums: no test collection (ingest splits off a test split)",
    )
    min_positives_other: int = Field(100, ge=0, description="the same minimum for every other finding")
    prevalence: dict[str, float] = Field(
        default_factory=lambda: {
            "cardiomegaly": 0.16, "pleural_effusion": 0.16, "pneumothorax": 0.3,
            "nodule": 0.3, "atelectasis": 0.16, "consolidation": 0.16,
        },
        description="the test collection's own prevalence, as phantom.prevalence: enriched so that few images reach "
        "the minimums (AUROC does not depend on prevalence)",
    )

    @field_validator("prevalence")
    @classmethod
    def _known_findings(cls, value: dict[str, float]) -> dict[str, float]:
        return _check_finding_keys(value, "phantom.test_collection.prevalence")


class PhantomParams(Section):
    """The built-in procedural chest radiograph collection (the default data source)."""

    n_patients: int = Field(
        1200, ge=4, description="patients in the training collection (only train and val when a test collection is written)"
    )
    repeat_study_fraction: float = Field(0.2, ge=0, le=1, description="patients with a second study")
    size: int = Field(256, ge=32, description="native pixel size of the square DICOM images")
    pixel_spacing_mm: float = Field(1.4, gt=0, description="millimetres per pixel of the phantom DICOMs at their native size")
    sites: int = Field(
        2, ge=1, le=2,
        description="acquisition sites (SITE-A, SITE-B) differing in exposure, contrast, noise and blur; "
        "each patient gets one at random",
    )
    prevalence: dict[str, float] = Field(
        default_factory=lambda: {
            "cardiomegaly": 0.12, "pleural_effusion": 0.10, "pneumothorax": 0.03,
            "nodule": 0.03, "atelectasis": 0.10, "consolidation": 0.08,
        },
        description="chance per finding that it is present: per patient for cardiomegaly and nodule, per study for "
        "the others; a finding left out never occurs",
    )
    lesion_contrast: float = Field(1.0, gt=0, description="scales every lesion's visibility")
    report_only_fraction: float = Field(
        0.1, ge=0, le=1, description="positive findings left blank in the label CSV (only the report names them)"
    )
    uncertain_fraction: float = Field(
        0.1, ge=0, le=1, description="positive findings the report hedges (\"possible ...\"; -1.0 in the label CSV)"
    )
    mask_fraction: float = Field(0.7, ge=0, le=1, description="positive lesions shipped with a mask file")
    test_collection: PhantomTestParams = Field(
        PhantomTestParams(), description="the test collection: new patients, both sites, rare findings enriched"
    )
    reserve_positives: int = Field(
        120, ge=0,
        description="the ceiling variant's reserve: new patients drawn as the training ones are and kept when an image "
        "states a rare finding present, until each rare finding has this many such images; 0: no reserve",
    )
    workers: int = Field(2, ge=1, description="chunks of patients generated in parallel (worker processes or threads: runtime.fanout; Dask workers when configured)")
    seed: int = Field(
        0, ge=0, description="every collection: each patient is drawn from (seed, collection, patient index) alone"
    )

    @field_validator("prevalence")
    @classmethod
    def _known_findings(cls, value: dict[str, float]) -> dict[str, float]:
        return _check_finding_keys(value, "phantom.prevalence")


class SplitParams(Section):
    train: float = Field(
        0.7, gt=0, description="share of patients in the training split (per rarest-finding stratum); the three sum to 1"
    )
    val: float = Field(0.1, gt=0, description="share of patients in the validation split (classifier early stopping)")
    test: float = Field(
        0.2, gt=0,
        description="share of patients in the held-out test split that evaluate scores on; unused when the source "
        "brings its own test collection (the phantom does), which is then the test split, train and val keeping their proportion",
    )

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitParams":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class IngestParams(Section):
    source: Literal["phantom", "chexpert", "mimic", "nih", "siim", "folder"] = Field(
        "phantom", description="format of the collection at path (see Running it on your data)"
    )
    path: str = Field("data/phantom", description="root of the source collection")
    image_size: int = Field(64, ge=16, description="working resolution: square, aspect kept, padded")
    split: SplitParams = Field(
        SplitParams(), description="patient-level split fractions, fixed here for every later stage"
    )
    views: list[str] = Field(default_factory=lambda: ["PA", "AP"], description="views kept")
    max_images: int | None = Field(None, ge=1, description="cap for quick runs on large sources")
    workers: int = Field(
        2, ge=1, description="images decoded and resized in parallel (worker processes or threads: runtime.fanout; Dask workers when configured)"
    )
    sample_grid: int = Field(16, ge=1, description="images in the MLflow sample grid")
    max_pixels: int = Field(
        20_000_000, ge=1,
        description="largest image a file may declare (rows x columns), checked from its header before any decoder runs; "
        "the default holds the largest radiographs (43 cm plates at 0.1 mm, about 4300 x 4300)",
    )
    min_size: int = Field(16, ge=2, description="images whose shorter side is below this many pixels are quarantined")
    allow_outside_path: bool = Field(
        False, description="read image and mask files that resolve (through symlinks too) outside path"
    )
    patient_conflict: Literal["stop", "merge"] = Field(
        "stop",
        description="the same decoded image under two patients: stop before the split, naming the rows, or merge "
        "those patients into one",
    )


class RadGraphParams(Section):
    model_type: str = Field("radgraph-xl", description="RadGraph model name, the subfolder of model_cache_dir")
    model_cache_dir: str | None = Field(None, description="folder holding <model_type>/{config.json, vocabulary/, weights.th}")
    batch_size: int = Field(8, ge=1, description="distinct reports per RadGraph batch")


class ParseReportsParams(Section):
    backend: Literal["rules", "radgraph"] = Field(
        "rules", description="report parser: rule-based (offline) or RadGraph (needs local weights)"
    )
    radgraph: RadGraphParams = Field(RadGraphParams(), description="the RadGraph backend's model")
    uncertain_policy: Literal["positive", "negative", "ignore"] = Field(
        "ignore", description="what a final uncertain state becomes: present, absent, or unknown (null)"
    )
    prefer: Literal["structured", "report"] = Field(
        "structured", description="which source wins where both give a state"
    )


class PrepareMasksParams(Section):
    min_area_px: int = Field(2, ge=0, description="lesions smaller than this at working size are dropped and reported")
    workers: int = Field(2, ge=1, description="images prepared in parallel (worker processes or threads: runtime.fanout; Dask workers when configured)")
    overlay_images: int = Field(8, ge=0, description="masked images drawn in the MLflow overlay figure")


class UNetParams(Section):
    channels: list[int] = Field(
        default_factory=lambda: [32, 64, 128], description="U-Net feature channels per resolution level"
    )
    attention_levels: list[bool] = Field(
        default_factory=lambda: [False, True, True],
        description="per level: self- and cross-attention to the condition tokens (one entry per channels entry)",
    )
    num_res_blocks: int = Field(1, ge=1, description="residual blocks per level")
    num_head_channels: int = Field(32, ge=1, description="channels per attention head")
    norm_num_groups: int = Field(16, ge=1, description="GroupNorm groups; must divide every channels entry")

    @model_validator(mode="after")
    def _levels_match(self) -> "UNetParams":
        if len(self.channels) != len(self.attention_levels):
            raise ValueError("channels and attention_levels must have the same length")
        return self


class TextEncoderParams(Section):
    kind: Literal["learned", "pretrained"] = Field(
        "learned",
        description="a small transformer trained with the model on the training texts, or a frozen pretrained encoder from path",
    )
    path: str | None = Field(None, description="local folder of a pretrained transformers encoder (kind=pretrained)")
    source: Literal["prompt", "report"] = Field("prompt", description="which text conditions the model")
    max_tokens: int = Field(32, ge=4, description="tokens per text; longer texts are truncated")
    dim: int = Field(128, ge=8, description="width of the learned text encoder")
    layers: int = Field(2, ge=1, description="transformer layers of the learned text encoder")
    min_word_count: int = Field(2, ge=1, description="rarer words map to the unknown token")


class ConditionDropout(Section):
    label: float = Field(
        0.15, ge=0, le=1, description="chance that a training image's labels are dropped (for classifier-free guidance)"
    )
    mask: float = Field(0.15, ge=0, le=1, description="chance that a training image's lesion masks are dropped")
    text: float = Field(0.15, ge=0, le=1, description="chance that a training image's text is dropped")


class LossParams(Section):
    lesion_weight: float = Field(2.0, ge=0, description="extra weight of the noise loss inside lesion masks")
    ssim_weight: float = Field(0.1, ge=0, description="weight of 1 - SSIM of the predicted clean image inside each lesion's bounding box; 0 turns it off")
    snr_gamma: float = Field(
        5.0, ge=0, description="weight the SSIM term per image by min(SNR, gamma)/gamma (Min-SNR); 0: unweighted"
    )


class DiffusionTrainParams(Section):
    steps: int = Field(1500, ge=1, description="optimisation steps in all; a resumed run trains up to this count")
    batch_size: int = Field(16, ge=1, description="training images per step over all processes (each of N processes takes batch_size / N)")
    learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate")
    ema_decay: float = Field(
        0.999, ge=0, lt=1,
        description="decay of the weights' moving average (warmed up over the first steps); the EMA weights are saved",
    )
    checkpoint_every: int = Field(250, ge=1, description="steps between resumable checkpoints (and the last step)")
    sample_every: int = Field(500, ge=1, description="steps between sample grids logged to MLflow (and the last step)")
    mixed_precision: MixedPrecision = Field("auto", description=MIXED_PRECISION)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: load in the main process)")
    grad_clip: float = Field(1.0, ge=0, description="largest gradient norm; 0 turns clipping off")
    cache_images: bool = Field(True, description="keep decoded training images in memory (small sets)")
    sample_steps: int = Field(20, ge=1, description="DPM-Solver steps of the sample grids logged while training")
    sample_guidance: float = Field(2.0, ge=0, description="guidance scale of those grids")
    processes: int = Field(
        1, ge=1, description="data-parallel training processes, one per GPU, launched through torchrun; 1: a single process"
    )


class AutoencoderLossParams(Section):
    kl_weight: float = Field(1e-6, ge=0, description="weight of the KL term that keeps the latent near N(0, 1)")
    adversarial_weight: float = Field(
        0.0, ge=0, description="weight of the patch-adversarial term (MONAI PatchDiscriminator); 0 turns it off"
    )
    adversarial_from_step: int = Field(
        0, ge=0, description="step from which the adversarial term and the discriminator train"
    )
    perceptual_weight: float = Field(
        0.0, ge=0, description="weight of the perceptual term; needs perceptual_network (nothing is downloaded)"
    )
    perceptual_network: str | None = Field(
        None, description="local TorchScript file of a feature network (B, 1, H, W) -> feature map(s) for the "
        "perceptual term, e.g. a scripted radiograph network",
    )

    @model_validator(mode="after")
    def _perceptual_needs_network(self) -> "AutoencoderLossParams":
        if self.perceptual_weight > 0 and not self.perceptual_network:
            raise ValueError("perceptual_weight > 0 needs perceptual_network (a local TorchScript file)")
        return self


class AutoencoderParams(Section):
    downsampling: int = Field(4, ge=1, description="image side / latent side; a power of two")
    latent_channels: int = Field(3, ge=1, description="channels of the latent image")
    base_channels: int = Field(32, ge=8, description="channels of the first level (doubling per level, at most 4x)")
    num_res_blocks: int = Field(1, ge=1, description="residual blocks per level")
    attention_at_bottom: bool = Field(False, description="self-attention at the lowest resolution level")
    steps: int = Field(600, ge=1, description="optimisation steps in all; a resumed run trains up to this count")
    batch_size: int = Field(16, ge=1, description="training images per step")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate of the autoencoder (and discriminator)")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="decay of the weights' moving average; the EMA weights are saved")
    checkpoint_every: int = Field(100, ge=1, description="steps between resumable checkpoints (and the last step)")
    mixed_precision: MixedPrecision = Field("auto", description=MIXED_PRECISION)
    loss: AutoencoderLossParams = Field(AutoencoderLossParams(), description="the loss terms and their weights")
    init_from: str | None = Field(
        None, description="local path to start from: an autoencoder model folder or checkpoint of this project, or a "
        "MONAI bundle folder (models/autoencoder.pth); what matches by name and shape loads, the rest is listed",
    )
    grid_images: int = Field(
        8, ge=1, description="real test images in the reconstruction grid logged after training (one per finding first)"
    )


class ControlNetParams(Section):
    steps: int = Field(
        500, ge=1, description="steps of the control branch (mask_control: controlnet), after the base's train.steps "
        "(none of those with init_from: the loaded base is kept as it is)",
    )
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate of the control branch")


class DiffusionParams(Section):
    timesteps: int = Field(
        1000, ge=10, description="steps of the forward noising process (linear betas rescaled when not 1000)"
    )
    schedule: Literal["linear", "cosine"] = Field("cosine", description="noise (beta) schedule of the forward process")
    prediction: Literal["epsilon", "v_prediction"] = Field(
        "v_prediction", description="what the network predicts: the noise, or the velocity v"
    )
    space: Literal["pixel", "latent"] = Field(
        "pixel", description="where the model diffuses: image pixels, or the latents of train_autoencoder's "
        "autoencoder (scaled to unit variance on the training split; masks max-pooled to the latent grid)",
    )
    unet: UNetParams = Field(UNetParams(), description="the MONAI DiffusionModelUNet")
    conditions: list[Literal["label", "mask", "text"]] = Field(
        default_factory=lambda: ["label", "mask", "text"],
        description="conditions the model takes; generate.condition_types may use only these",
    )
    label_dim: int = Field(128, ge=8, description="width of label and text context tokens")
    text_encoder: TextEncoderParams = Field(TextEncoderParams(), description="the text condition's encoder")
    dropout: ConditionDropout = Field(
        ConditionDropout(), description="independent per-image condition dropout in training"
    )
    loss: LossParams = Field(LossParams(), description="the lesion-preserving loss")
    train: DiffusionTrainParams = Field(DiffusionTrainParams(), description="the training loop")
    mask_control: Literal["concat", "controlnet"] = Field(
        "concat", description="how lesion masks enter: as extra input channels of the U-Net (concat), or through a "
        "MONAI ControlNet branch trained on a frozen base denoiser (controlnet)",
    )
    controlnet: ControlNetParams = Field(ControlNetParams(), description="the control branch (mask_control: controlnet)")
    init_from: str | None = Field(
        None, description="local path to start from: a model folder or checkpoint of this project, or a MONAI bundle "
        "folder (models/diffusion_model.pth); what matches by name and shape loads, the rest is listed",
    )

    @model_validator(mode="after")
    def _control_needs_masks(self) -> "DiffusionParams":
        if self.mask_control == "controlnet" and "mask" not in self.conditions:
            raise ValueError("mask_control 'controlnet' needs 'mask' in diffusion.conditions")
        return self


class GenerateParams(Section):
    rare_findings: list[str] = Field(
        default_factory=lambda: ["pneumothorax", "nodule"],
        description="findings synthetic images are made of; evaluate's rare-finding metrics and figures cover these",
    )
    target_share: float = Field(0.1, gt=0, lt=1, description="share of the training split each rare finding is brought up to")
    max_per_finding: int = Field(400, ge=0, description="most synthetic images per rare finding")
    # Mask-conditioned types by default: at the CPU profile's training budget only they put the lesion
    # where it is asked for; label- or text-only generation needs a longer (GPU) training run.
    condition_types: list[ConditionType] = Field(
        default_factory=lambda: ["label+mask+text", "label+mask", "mask+text"],
        description="conditions each image is generated under; a finding's images cycle through them "
        "(mask types only for findings with mask templates)",
    )
    unmasked_condition_types: list[Literal["label", "text", "label+text"]] = Field(
        default_factory=lambda: ["label+text"],
        description="used instead for a rare finding that no training image outlines (boxes, RLE or masks), "
        "when none of condition_types is open to it; empty: such a finding gets no synthetic images",
    )
    sampler: Literal["ddpm", "ddim", "dpm_solver", "dpm_solver_3m", "dpm_solver_sde", "unipc"] = Field(
        "dpm_solver", description="diffusers sampler: DDPM (ancestral), DDIM (eta 0), DPM-Solver++ 2M, its 3M and "
        "SDE (2M) forms, or UniPC (bh2)"
    )
    steps: int = Field(20, ge=1, description="sampler steps per image")
    guidance_scale: float = Field(
        2.0, ge=0, description="classifier-free guidance scale (1: conditional only, 0: unconditional)"
    )
    batch_size: int = Field(32, ge=1, description="images sampled at once (the images do not depend on it)")
    workers: int = Field(
        1, ge=1, description="parts of the plan sampled in parallel, each loading the model: Dask workers when "
        "runtime.dask_address is set, threads otherwise (the images do not depend on it)"
    )
    mask_shift: float = Field(0.1, ge=0, le=0.5, description="largest move, as a fraction of the image side")
    mask_scale: tuple[float, float] = Field(
        (0.8, 1.25), description="(low, high) range of a moved lesion's scale about its centroid"
    )
    mask_flip: bool = Field(
        True, description="mirror about half of the images left-right (every finding's side swapped)"
    )
    mask_inside: float = Field(
        0.95, gt=0, le=1, description="share of a moved lesion that must stay inside the lung-field prior"
    )
    seed: int = Field(0, description="each image's seed, template and mask move derive from (seed, finding, index)")

    _ordered_scale = field_validator("mask_scale")(lambda value: positive_range(value, "mask_scale"))

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
    rotate_degrees: float = Field(7.0, ge=0, le=30, description="largest rotation either way, in degrees")
    translate_fraction: float = Field(0.05, ge=0, le=0.3, description="largest shift, as a fraction of the image side")
    zoom: float = Field(0.05, ge=0, le=0.3, description="largest relative zoom in or out")
    gamma: tuple[float, float] = Field((0.8, 1.25), description="contrast gamma range")
    intensity_scale: float = Field(0.1, ge=0, le=1, description="largest relative brightness change")
    intensity_shift: float = Field(0.05, ge=0, le=1, description="largest brightness offset")
    noise_std: float = Field(0.01, ge=0, le=0.2, description="Gaussian noise standard deviation")

    _ordered_positive = field_validator("gamma")(lambda value: positive_range(value, "gamma"))


class MixParams(Section):
    # int | float keeps a ratio written as 1 an int, so variant names match what dvc.yaml renders.
    ratios: list[int | float] = Field(default_factory=lambda: [0.5, 1, 2], description="synthetic images per real image of each rare finding")
    baselines: list[Literal["real_only", "classical_aug", "class_weighted", "ceiling"]] = Field(
        default_factory=lambda: ["real_only", "classical_aug", "class_weighted", "ceiling"],
        description="baseline variants: real images only, with classical augmentation, with class balancing, and the "
        "more-real-data ceiling (phantom only: real only plus reserve positives of each rare finding)",
    )
    cap_per_finding: int = Field(1000, ge=0, description="most synthetic images a ratio variant adds per finding")
    ceiling_ratio: int | float | None = Field(
        None, gt=0,
        description="the ceiling adds as many reserve positives of each rare finding as this ratio's variant asks for "
        "synthetic ones (same rule and caps); null: the largest of mix.ratios",
    )
    class_balance: Literal["pos_weight", "oversample"] = Field(
        "pos_weight", description="class_weighted baseline: BCE pos_weight per finding, or a sampler oversampling rare positives"
    )
    augmentation: AugmentationParams = Field(
        AugmentationParams(), description="the classical_aug baseline's augmentation"
    )
    seed: int = Field(
        0, description="order in which each finding's synthetic images are drawn (a smaller ratio's are a subset of a larger one's)"
    )

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
    architecture: Literal["densenet_small", "densenet_small_stride2", "densenet121"] = Field(
        "densenet_small", description="MONAI DenseNet: a small one sized for 64 px on a CPU (its stem takes the image to a "
        "quarter), the same without the stem's max-pool (half: small lesions keep a few cells), or DenseNet121"
    )
    unmentioned: Literal["ignore", "negative"] = Field(
        "ignore", description="a finding a row's labels leave null (not mentioned) in training and validation: ignore "
        "(left out of the loss) or negative (absent, as evaluate scores the test split); uncertain stays left out"
    )
    monitor_findings: list[str] | None = Field(
        None, description="findings whose mean validation AUROC early stopping follows (those with both classes in "
        "validation); null: every finding with both classes"
    )
    lesion_weight: float = Field(
        0.0, ge=0, description="weight of the lesion-map loss beside the labels' (0: off): a 1x1-conv head on the "
        "final feature map learns each finding's lesion mask, max-pooled to that grid; needs lesion masks "
        "(prepare_masks' mask_path, generate's masks of mask-conditioned images); rows without one learn only "
        "from a negative label (an empty map)"
    )
    lesion_pos_weight: float = Field(
        20.0, gt=0, description="weight of the lesion cells in the lesion-map loss (few cells hold a lesion)"
    )
    epochs: int = Field(15, ge=1, description="most training epochs (early stopping may end sooner)")
    batch_size: int = Field(32, ge=1, description="images per training and validation batch")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    patience: int = Field(4, ge=1, description="epochs without validation AUROC gain before stopping")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: load in the main process)")
    mixed_precision: MixedPrecision = Field(
        "auto", description=MIXED_PRECISION + "; also the evaluation's predictions (its feature network stays float32)"
    )
    seeds: list[int] = Field(
        [0, 1, 2], min_length=1,
        description="one classifier per seed for every variant (initial weights and batch order), the same seeds for "
        "every variant so comparisons pair up; evaluate averages over them and counts their spread (an older "
        "`seed: N` reads as `seeds: [N]`)",
    )

    @model_validator(mode="before")
    @classmethod
    def _single_seed(cls, data):
        """Params written before seeds were repeated: ``seed: N`` is one seed."""
        if isinstance(data, dict) and "seed" in data and "seeds" not in data:
            data = {**data, "seeds": [data["seed"]]}
            del data["seed"]
        return data

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("monitor_findings")
    @classmethod
    def _known_monitor_findings(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            check_finding(name, "classifier.monitor_findings")
        return value


class EvaluateParams(Section):
    specificity: float = Field(0.9, gt=0, lt=1, description="operating point at which sensitivity is reported")
    bootstrap: int = Field(
        1000, ge=0, description="stratified bootstrap resamples of each AUROC interval; 0: no bootstrap interval"
    )
    memorisation_threshold: float = Field(
        0.95, gt=0, le=1,
        description="pixel correlation (or feature cosine) with the nearest training image at which a synthetic image "
        "counts as a near-copy",
    )
    prdc_k: int = Field(5, ge=1, description="nearest neighbours k of precision, recall, density and coverage")
    feature_network: str | None = Field(None, description="local path of a pretrained radiograph network; default: the real-only classifier")
    segmenter_epochs: int = Field(40, ge=1, description="epochs of the lesion segmenter behind mask adherence")
    reader_study_images: int = Field(20, ge=1, description="real and as many synthetic images in the reader study")
    embedding: Literal["pca", "tsne"] = Field(
        "pca", description="2-D projection of the real/synthetic embedding figure"
    )
    train_sites: list[str] | None = Field(
        None,
        description="acquisition sites (the manifest's site pseudonyms: site-1, site-2, ...; metrics/ingest.json "
        "counts them) whose training and validation images train the diffusion model and every classifier variant; "
        "null: every site. Test images of every site are scored; with sites named, the report gives each finding's "
        "AUROC drop from these sites to the others",
    )
    min_cases: int = Field(
        10, ge=2,
        description="fewest test positives and as many negatives a finding needs for an AUROC, interval, p-value or "
        "minimum detectable difference; below it the finding says too few positives (or negatives) instead",
    )
    batch_size: int = Field(64, ge=1, description="images per batch in feature extraction and classifier inference")
    seed: int = Field(0, description="bootstrap, KID subsets, lesion segmenter, embedding sample and reader-study draw")

    @field_validator("train_sites")
    @classmethod
    def _some_distinct_sites(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list trains on nothing; null trains on every site")
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"names a site twice: {value}")
        return value


class TrackingParams(Section):
    mlflow_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI every stage logs to")
    experiment: str = Field("cxrsynth", description="MLflow experiment of the runs")


class RuntimeParams(Section):
    dask_address: str | None = Field(None, description="Dask scheduler address; unset: worker processes or threads (runtime.fanout)")
    fanout: Literal["processes", "threads"] = Field(
        "processes", description="where the chunks of the Python-bound mapped work (phantom, ingest, prepare_masks) "
        "run without Dask: processes: worker processes (one thread each; one Prefect task run per chunk still "
        "tracks each), since threads take turns at Python's lock; threads: threads of the stage process. One "
        "worker, or work of one chunk, always runs on a thread; generate's torch sampling always runs on threads. "
        "The outputs are the same bytes either way"
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch CPU threads of each stage process; null: OMP_NUM_THREADS if set, else every CPU "
        "the process may use (its affinity mask); capped at those CPUs, and at a fair share of them for each of "
        "several sampling parts or Dask tasks running at once"
    )
    adaptive_threads: bool = Field(
        True, description="on CPU, the long loops (diffusion, autoencoder and classifier training, sampling) run "
        "one torch thread fewer for each CPU other processes keep busy, measured every few seconds, and take them "
        "back when those CPUs are free; never more than runtime.torch_threads, OMP_NUM_THREADS or the usable CPUs "
        "allow. The thread count can change the float rounding of CPU results, as the machine's CPU count already "
        "does: set false for runs that must repeat bit for bit on one machine"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where torch runs; auto: CUDA when available, else CPU"
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="the conv networks (diffusion U-Net, autoencoder, classifier) and their image inputs in "
        "channels_last (NHWC) memory, for training and inference; auto: where it measured faster: the classifier "
        "under bf16 autocast on a CPU with AMX or AVX-512 BF16 (the U-Net and the autoencoder showed no gain "
        "there), every network on CUDA under autocast; float32 runs stay contiguous. Results agree within float rounding and saved weights are the same bytes "
        "either way. Each stage logs runtime.memory_format.<network> and the reason"
    )


class Params(Section):
    seed: int = Field(
        0, description="seeds random, NumPy and torch at every stage start, the patient-level split, the ingest "
        "sample grid and the diffusion model's initial weights, batches and preview grids",
    )
    phantom: PhantomParams = Field(
        PhantomParams(), description="The built-in procedural chest radiograph collection (stage `phantom`)."
    )
    ingest: IngestParams = Field(
        IngestParams(),
        description="Reading the source collection into working images, the manifest and the patient-level split (stage `ingest`).",
    )
    parse_reports: ParseReportsParams = Field(
        ParseReportsParams(),
        description="Report parsing and its merge with the structured labels (stage `parse_reports`).",
    )
    prepare_masks: PrepareMasksParams = Field(
        PrepareMasksParams(), description="Lesion masks at working resolution (stage `prepare_masks`)."
    )
    autoencoder: AutoencoderParams = Field(
        AutoencoderParams(), description="The autoencoder of latent diffusion and its reconstruction fidelity on the real "
        "test split (stage `train_autoencoder`; trained only when `diffusion.space` is latent)."
    )
    diffusion: DiffusionParams = Field(
        DiffusionParams(), description="The conditional diffusion model and its training (stage `train_diffusion`)."
    )
    generate: GenerateParams = Field(
        GenerateParams(), description="Synthetic images of the rare findings (stage `generate`)."
    )
    mix: MixParams = Field(
        MixParams(), description="The classifier's training-set variants: baselines and real + synthetic ratios "
        "(stages `mix_baselines`, `mix@<ratio>`).",
    )
    classifier: ClassifierParams = Field(
        ClassifierParams(), description="The downstream classifier, the same for every variant "
        "(stages `train_baseline@<b>`, `train_classifier@<ratio>`).",
    )
    evaluate: EvaluateParams = Field(
        EvaluateParams(), description="Classifiers on the real test split, and the synthetic set against real images "
        "(stage `evaluate`)."
    )
    tracking: TrackingParams = Field(TrackingParams(), description="Where every stage logs its MLflow run.")
    runtime: RuntimeParams = Field(
        RuntimeParams(), description="How stages run: Dask or threads, torch threads, device."
    )

    @model_validator(mode="after")
    def _collections_can_be_drawn(self) -> "Params":
        check_phantom_collections(self.phantom, self.generate.rare_findings)
        check_ceiling(self)
        return self


def check_phantom_collections(phantom: PhantomParams, rare_findings: list[str]) -> None:
    """A finding the test collection or the reserve must reach needs a prevalence there, or drawing never ends."""
    test = phantom.test_collection
    for finding in FINDINGS:
        wanted = test.min_positives_rare if finding in rare_findings else test.min_positives_other
        if wanted and test.prevalence.get(finding, 0.0) <= 0:
            raise ValueError(f"phantom.test_collection.prevalence.{finding} must be > 0: the test collection needs "
                             f"{wanted} positives of it")
    for finding in rare_findings if phantom.reserve_positives else ():
        if phantom.prevalence.get(finding, 0.0) <= 0:
            raise ValueError(f"phantom.prevalence.{finding} must be > 0: the reserve (phantom.reserve_positives) needs "
                             "positives of each rare finding")


def check_ceiling(params: Params) -> None:
    """The ceiling variant adds real reserve positives, which only the phantom source can draw."""
    if "ceiling" not in params.mix.baselines:
        return
    if params.ingest.source != "phantom":
        raise ValueError(f"mix.baselines: ceiling needs the phantom source's reserve collection; ingest.source "
                         f"{params.ingest.source!r} has none, so remove ceiling from mix.baselines")
    if params.phantom.reserve_positives == 0:
        raise ValueError("mix.baselines: ceiling needs a reserve; phantom.reserve_positives is 0")
    if params.mix.ceiling_ratio is None and not params.mix.ratios:
        raise ValueError("mix.ceiling_ratio: null means the largest of mix.ratios, and mix.ratios is empty")


class ParamsError(ValueError):
    """A params file that does not fit the model; the message names each bad key."""


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if not error["loc"] and error["type"] == "value_error":  # a check across sections names its own keys
        return str(error["ctx"]["error"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def _empty_sections(raw: dict, model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of the sections (nested models) written with nothing in them."""
    empty = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if not (isinstance(kind, type) and issubclass(kind, Section)) or name not in raw:
            continue
        value = raw[name]
        if value is None or value == {}:
            empty.append(f"{prefix}{name}")
        elif isinstance(value, dict):
            empty += _empty_sections(value, kind, f"{prefix}{name}.")
    return empty


def parse_params(raw: dict, source: str = "params") -> Params:
    """Validate a params mapping strictly (a "32" is not an int); raise ParamsError naming every bad key.

    Strict validation goes through JSON, where a YAML list is a valid tuple, so only what YAML
    itself typed is accepted: no string is turned into a number, no number into a string.
    """
    try:
        text = json.dumps(raw or {}, allow_nan=False)
    except (TypeError, ValueError) as exc:  # a YAML date or timestamp, NaN or infinity
        raise ParamsError(f"{source} is invalid: a value is not a plain number, string, list or mapping ({exc})") from None
    try:
        return Params.model_validate_json(text, strict=True)
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
    if raw is None or raw == {}:
        raise ParamsError(f"{path}: the params file is empty (every section of the profile is expected)")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    # A forgotten or emptied section would otherwise run on its defaults without a word.
    missing = [name for name in Params.model_fields if name not in raw]
    if missing:
        raise ParamsError(f"{path}: missing section{'s' * (len(missing) > 1)} {', '.join(missing)}")
    empty = _empty_sections(raw, Params)
    if empty:
        raise ParamsError(f"{path}: empty section{'s' * (len(empty) > 1)} {', '.join(empty)}")
    return parse_params(raw, str(path))


def section_dict(params: Params, name: str) -> dict:
    """One section as a plain dict (for logging a stage's params)."""
    return getattr(params, name).model_dump(mode="json")


__all__ = ["FINDINGS", "Params", "ParamsError", "load_params", "parse_params", "section_dict"]
