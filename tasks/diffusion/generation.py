"""Generation: the plan made concrete (template, moved mask, labels, prompt per image), sampled in
seeded batches, written as 16-bit PNGs with their masks and a synthetic manifest.

Every request depends only on its image's seed, so the output does not depend on batch size, and a
rerun with the same plan keeps the images already written (an interrupted run resumes).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cxrsynth.models.conditioning import CONDITION_NAMES, Conditions
from cxrsynth.tasks import threads
from cxrsynth.tasks.device import ChannelsLastSetting
from cxrsynth.tasks.diffusion.data import readable_rows, training_rows
from cxrsynth.tasks.diffusion.grids import pairs, tile, write_rgb
from cxrsynth.tasks.diffusion.labels import attribute_indices, label_attributes, read_lesions, state_indices
from cxrsynth.tasks.diffusion.lesion_masks import (
    jitter_mask,
    lung_field_prior,
    mirror,
    replace_channel,
    swap_laterality,
)
from cxrsynth.tasks.diffusion.model_io import ModelConfig
from cxrsynth.tasks.diffusion.plan import finding_counts, generation_plan, needs_mask
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline
from cxrsynth.tasks.diffusion.tokenizer import Tokenizer
from cxrsynth.tasks.findings import FINDINGS, PRESENT, finding_index
from cxrsynth.tasks.io import read_mask, read_png16, write_json, write_mask, write_png16
from cxrsynth.tasks.masks import labelmap
from cxrsynth.tasks.masks.attributes import lesion_attributes
from cxrsynth.tasks.masks.geometry import Geometry
from cxrsynth.tasks.params import GenerateParams
from cxrsynth.tasks.reports.prompts import canonical_prompt
from cxrsynth.tasks.reports.records import FindingState

OUT = Path("data/generate")
PLAN_FILE = "plan.json"
# Sampling runs under bf16 autocast where the device computes it natively, float32 elsewhere (tasks.device).
SAMPLING_PRECISION = "auto"
REQUEST_COLUMNS = [
    "image_id", "finding", "condition_type", "seed", "template_image_id", "flipped", "moved", "prompt", "view",
    "pixel_spacing_mm", "mask_path", "n_lesions",
    *[f"{f}{suffix}" for f in FINDINGS for suffix in ("", "_laterality", "_severity", "_location")],
]


def condition_names(condition_type: str) -> tuple[str, ...]:
    return tuple(condition_type.split("+"))


def check_condition_types(condition_types: list[str], model_conditions: list[str]) -> None:
    for condition_type in condition_types:
        missing = [c for c in condition_names(condition_type) if c not in model_conditions]
        if missing:
            raise ValueError(f"generate.condition_types: {condition_type!r} needs the {', '.join(missing)} condition, "
                             f"which the model was not trained with (diffusion.conditions = {model_conditions})")


def read_label_maps(frame: pd.DataFrame, root: str | Path) -> dict[str, np.ndarray]:
    """The label map of every row that has one, by image_id."""
    rows = frame[frame["mask_path"].notna()]
    return {image_id: read_mask(Path(root) / path) for image_id, path in zip(rows["image_id"], rows["mask_path"])}


def complete(label_map: np.ndarray, row: pd.Series, maskable: list[str]) -> bool:
    """Every present, maskable finding of ``row`` has lesion pixels in ``label_map`` (the rule the
    model was trained under, ``tasks.diffusion.data.masks_complete``)."""
    return all((label_map & (1 << finding_index(f))).any() for f in maskable if pd.notna(row[f]) and row[f] == PRESENT)


def templates(train: pd.DataFrame, label_maps: dict[str, np.ndarray], findings: list[str],
              maskable: list[str]) -> dict[str, dict[str, list[str]]]:
    """Per rare finding: ``positive`` training images, and ``masked`` ones whose label map shows the
    finding and is complete (only those may condition an image through its mask)."""
    found = {}
    for finding in findings:
        positive = train[train[finding] == PRESENT]
        bit = 1 << finding_index(finding)
        masked = [row["image_id"] for _, row in positive.iterrows()
                  if row["image_id"] in label_maps and (label_maps[row["image_id"]] & bit).any()
                  and complete(label_maps[row["image_id"]], row, maskable)]
        found[finding] = {"positive": positive["image_id"].tolist(), "masked": masked}
    return found


def usable_condition_types(generate: GenerateParams, pools: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    """The condition types each finding can use: mask types only where it has mask templates; a
    finding left with none (a source that outlines no such lesion) falls back to the unmasked types."""
    usable = {}
    for finding in generate.rare_findings:
        types = [t for t in generate.condition_types if pools[finding]["masked"] or not needs_mask(t)]
        usable[finding] = types or list(generate.unmasked_condition_types)
    return usable


def _template_labels(attributes: pd.Series, states: pd.Series) -> dict[str, dict[str, object]]:
    def value(v):
        return None if pd.isna(v) else (int(v) if isinstance(v, (int, np.integer)) else v)

    labels = {"state": {f: value(states[f]) for f in FINDINGS}}
    for attribute in ("laterality", "severity", "location"):
        labels[attribute] = {f: value(attributes[f"{f}_{attribute}"]) for f in FINDINGS}
    return labels


def prompt_of(labels: dict[str, dict[str, object]]) -> str:
    """The canonical prompt (the one parse_reports wrote for the training images) of requested labels."""
    return canonical_prompt({f: FindingState(state=labels["state"][f], laterality=labels["laterality"][f],
                                             location=labels["location"][f], severity=labels["severity"][f])
                             for f in FINDINGS})


def make_request(plan_row: pd.Series, train: pd.DataFrame, attributes: pd.DataFrame, label_maps: dict[str, np.ndarray],
                 pools: dict[str, dict[str, list[str]]], prior: np.ndarray | None,
                 generate: GenerateParams) -> tuple[dict, np.ndarray | None]:
    """One image's full request, drawn from its own seed: template, mask, labels, prompt.

    A moved lesion's laterality and zone are measured on the moved mask as prepare_masks measures
    real ones; a mirrored image swaps every other finding's side; severity stays the template's."""
    rng = np.random.default_rng(plan_row["seed"])
    finding, with_mask = plan_row["finding"], needs_mask(plan_row["condition_type"])
    pool = pools[finding]["masked" if with_mask else "positive"]
    template_id = pool[rng.integers(len(pool))]
    position = train.index[train["image_id"] == template_id][0]
    template = train.loc[position]
    labels = _template_labels(attributes.loc[position], template)
    labels["state"][finding] = PRESENT
    label_map, flipped, moved = None, False, False
    if with_mask:
        base = label_maps[template_id]
        channel = (base >> finding_index(finding)) & 1
        lesion, jitter = jitter_mask(channel, prior, rng, generate.mask_shift, generate.mask_scale,
                                     generate.mask_flip, generate.mask_inside)
        label_map = replace_channel(mirror(base) if jitter.flip else base, finding, lesion)
        flipped, moved = jitter.flip, jitter.moved
    else:
        flipped = bool(generate.mask_flip and rng.random() < 0.5)
    if flipped:
        labels["laterality"] = {f: swap_laterality(v) for f, v in labels["laterality"].items()}
    if with_mask:
        measured = lesion_attributes(lesion, Geometry.of_row(template, label_map.shape))
        labels["laterality"][finding], labels["location"][finding] = measured["laterality"], measured["zone"]
    request = {
        "image_id": plan_row["image_id"], "finding": finding, "condition_type": plan_row["condition_type"],
        "seed": int(plan_row["seed"]), "template_image_id": template_id, "flipped": flipped, "moved": moved,
        "prompt": prompt_of(labels), "view": template["view"], "pixel_spacing_mm": template["pixel_spacing_mm"],
        "mask_path": str(OUT / "masks" / f"{plan_row['image_id']}.png") if with_mask else None,
        "n_lesions": int(sum(bool((label_map >> i & 1).any()) for i in range(len(FINDINGS)))) if with_mask else 0,
    }
    for f in FINDINGS:
        request[f] = labels["state"][f]
        for attribute in ("laterality", "severity", "location"):
            request[f"{f}_{attribute}"] = labels[attribute][f]
    return request, label_map


def build_requests(
    plan: pd.DataFrame, train: pd.DataFrame, label_maps: dict[str, np.ndarray],
    pools: dict[str, dict[str, list[str]]], generate: GenerateParams, lesions: pd.DataFrame,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every planned image's request, and the label maps of those conditioned on a mask."""
    train = train.reset_index(drop=True)
    attributes = label_attributes(train, lesions)
    needs_prior = plan["condition_type"].map(needs_mask).any() if len(plan) else False
    prior = lung_field_prior(label_maps[i] for i in train["image_id"] if i in label_maps) if needs_prior else None
    requests, maps = [], {}
    for _, plan_row in plan.iterrows():
        request, label_map = make_request(plan_row, train, attributes, label_maps, pools, prior, generate)
        requests.append(request)
        if label_map is not None:
            maps[request["image_id"]] = label_map
    return pd.DataFrame(requests, columns=REQUEST_COLUMNS), maps


def request_conditions(requests: pd.DataFrame, maps: dict[str, np.ndarray], tokenizer: Tokenizer,
                       image_size: int) -> Conditions:
    """The conditions of a batch of requests, each keeping only its condition type's conditions."""
    attributes = attribute_indices(requests)
    empty = np.zeros((len(FINDINGS), image_size, image_size), np.float32)
    masks = np.stack([labelmap.decode(maps[i]) if i in maps else empty for i in requests["image_id"]])
    text = tokenizer.encode(requests["prompt"].tolist())
    kept = {name: torch.tensor([name in condition_names(t) for t in requests["condition_type"]])
            for name in CONDITION_NAMES}
    return Conditions(
        states=torch.from_numpy(state_indices(requests)), laterality=torch.from_numpy(attributes["laterality"]),
        severity=torch.from_numpy(attributes["severity"]), masks=torch.from_numpy(masks),
        text_ids=text["text_ids"], text_attention=text["text_attention"],
        keep_label=kept["label"], keep_mask=kept["mask"] & torch.tensor([i in maps for i in requests["image_id"]]),
        keep_text=kept["text"] & text["text_present"],
    )


def image_path(image_id: str) -> Path:
    return OUT / "images" / f"{image_id}.png"


def plan_digest(requests: pd.DataFrame, settings: dict) -> str:
    payload = json.dumps({"requests": requests.astype(object).where(requests.notna(), None).to_dict("records"),
                          "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepare_output(root: str | Path, digest: str) -> int:
    """Keep the images of an interrupted run of the same plan; clear those of any other plan.
    Returns how many images were kept."""
    root = Path(root)
    plan_file = root / OUT / PLAN_FILE
    previous = json.loads(plan_file.read_text()).get("digest") if plan_file.exists() else None
    if previous != digest:
        for folder in ("images", "masks", "grids"):
            shutil.rmtree(root / OUT / folder, ignore_errors=True)
    write_json(plan_file, {"digest": digest})
    images = root / OUT / "images"
    return len(list(images.glob("*.png"))) if images.is_dir() else 0


def write_condition_masks(maps: dict[str, np.ndarray], root: str | Path = ".") -> None:
    for image_id, label_map in maps.items():
        write_mask(Path(root) / OUT / "masks" / f"{image_id}.png", label_map)


def pending(requests: pd.DataFrame, root: str | Path = ".") -> pd.DataFrame:
    """The requests whose image is not on disk yet."""
    on_disk = requests["image_id"].map(lambda image_id: (Path(root) / image_path(image_id)).exists()).astype(bool)
    return requests[~on_disk]


def sample_requests(pipeline: GenerationPipeline, todo: pd.DataFrame, maps: dict[str, np.ndarray],
                    generate: GenerateParams, root: str | Path = ".", on_batch: Callable[[], object] | None = None) -> int:
    """Sample and write the images of ``todo`` in batches under the pipeline's sampler; returns how
    many were written. ``on_batch`` runs after each batch (the part's thread governor)."""
    with tqdm(total=len(todo), desc=f"generate ({pipeline.sampler}, {generate.steps} steps)", unit="img") as bar:
        for start in range(0, len(todo), generate.batch_size):
            batch = todo.iloc[start:start + generate.batch_size]
            cond = request_conditions(batch, maps, pipeline.tokenizer, pipeline.config.image_size)
            images = pipeline(cond, batch["seed"].tolist(), generate.steps, generate.guidance_scale)
            if on_batch is not None:
                on_batch()
            for image_id, image in zip(batch["image_id"], images[:, 0].numpy(), strict=True):
                write_png16(Path(root) / image_path(image_id), image)
            bar.update(len(batch))
    return len(todo)


def sample_part(model_dir: str | Path, todo: pd.DataFrame, maps: dict[str, np.ndarray], generate: GenerateParams,
                root: str | Path, device: str = "cpu", cpu: threads.ThreadRequest = threads.ThreadRequest(),
                autoencoder_dir: str | Path | None = None, channels_last: ChannelsLastSetting = False) -> int:
    """One worker's part of the plan (a thread, or a Dask worker that shares the project folder):
    takes its share of the CPUs (``cpu``), loads the model (and, in latent space, the autoencoder of
    ``autoencoder_dir``) where it runs, in the memory format ``runtime.channels_last`` =
    ``channels_last`` gives it, then samples and writes the part's images."""
    setting = cpu.apply()
    print(setting.describe())
    pipeline = GenerationPipeline.from_pretrained(model_dir, device, sampler=generate.sampler,
                                                  mixed_precision=SAMPLING_PRECISION, autoencoder=autoencoder_dir,
                                                  channels_last=channels_last)
    return sample_requests(pipeline, todo, maps, generate, root, on_batch=cpu.step_hook(setting))


def run_stats(n_requests: int, generated: int, wall: float) -> dict:
    return {"generated": generated, "kept": n_requests - generated, "wall_s": wall,
            "images_per_s": generated / wall if generated and wall > 0 else 0.0}


def synthetic_manifest(requests: pd.DataFrame, image_size: int, checkpoint_digest: str,
                       generate: GenerateParams) -> pd.DataFrame:
    """Manifest rows of the synthetic images: train split only, no patient, the exact request."""
    frame = pd.DataFrame({
        "image_id": requests["image_id"], "split": "train", "source": "synthetic", "dataset": "synthetic",
        "path": [str(image_path(i)) for i in requests["image_id"]], "view": requests["view"],
        "orig_height": image_size, "orig_width": image_size, "scale": 1.0, "pad_top": 0, "pad_left": 0,
        "pixel_spacing_mm": requests["pixel_spacing_mm"], "prompt": requests["prompt"],
        "mask_path": requests["mask_path"], "n_lesions": requests["n_lesions"],
        "condition_type": requests["condition_type"], "seed": requests["seed"], "sampler": generate.sampler,
        "steps": generate.steps, "guidance_scale": generate.guidance_scale, "checkpoint_digest": checkpoint_digest,
        "template_image_id": requests["template_image_id"],
    })
    for f in FINDINGS:
        frame[f] = requests[f]
        for attribute in ("laterality", "severity", "location"):
            frame[f"{f}_{attribute}"] = requests[f"{f}_{attribute}"]
    return frame


def plan_for(frame: pd.DataFrame, root: str | Path, generate: GenerateParams,
             config: ModelConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Counts per finding, the requests and their label maps, from the prepare_masks manifest and
    the trained model's config."""
    check_condition_types(list(generate.condition_types), config.conditions)
    train, _ = readable_rows(training_rows(frame), root)  # train_diffusion reports the unreadable ones
    label_maps = read_label_maps(train, root)
    pools = templates(train, label_maps, generate.rare_findings, config.maskable)
    counts = finding_counts(train, generate)
    types = usable_condition_types(generate, pools)
    check_condition_types(sorted({t for used in types.values() for t in used}), config.conditions)
    counts["condition_types"] = [", ".join(types[f]) for f in counts["finding"]]
    plan = generation_plan(counts, types, generate.seed)
    counts["generated"] = [int((plan["finding"] == f).sum()) for f in counts["finding"]]
    requests, maps = build_requests(plan, train, label_maps, pools, generate, read_lesions(root))
    return counts, requests, maps


def read_images(requests: pd.DataFrame, root: str | Path = ".") -> list[np.ndarray]:
    return [read_png16(Path(root) / image_path(i)) for i in requests["image_id"]]


GRID_IMAGES = 8


def write_grids(requests: pd.DataFrame, maps: dict[str, np.ndarray], root: str | Path = ".") -> list[Path]:
    """``grids/finding_<f>.png`` and ``grids/condition_<type>.png``: up to GRID_IMAGES images each,
    plain beside outlined with the mask that conditioned it."""
    root, written = Path(root), []
    groups = [("finding", f, requests[requests["finding"] == f]) for f in requests["finding"].unique()]
    groups += [("condition", t, requests[requests["condition_type"] == t]) for t in requests["condition_type"].unique()]
    for kind, name, rows in groups:
        rows = rows.head(GRID_IMAGES)
        tiles = pairs(read_images(rows, root), [maps.get(i) for i in rows["image_id"]])
        path = root / OUT / "grids" / f"{kind}_{name.replace('+', '_')}.png"
        write_rgb(path, tile(tiles, columns=4))
        written.append(path)
    return written


def generation_metrics(counts: pd.DataFrame, requests: pd.DataFrame, stats: dict) -> dict:
    with_mask = requests[requests["mask_path"].notna()]
    return {
        "planned": len(requests),
        "generated": stats["generated"],
        "kept_from_earlier_run": stats["kept"],
        "images_per_s": round(stats["images_per_s"], 3),
        "wall_s": round(stats["wall_s"], 2),
        "moved_mask_share": float(with_mask["moved"].mean()) if len(with_mask) else None,
        "unmoved_masks": int((~with_mask["moved"].astype(bool)).sum()),
        "flipped_share": float(requests["flipped"].mean()) if len(requests) else None,
        "per_condition_type": requests["condition_type"].value_counts().sort_index().to_dict(),
        "per_finding": {row["finding"]: {k: row[k] for k in ("n_train", "n_positive", "target", "generated",
                                                             "condition_types")}
                        for _, row in counts.iterrows()},
    }
