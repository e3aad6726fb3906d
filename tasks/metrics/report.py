"""The human-readable evaluation report: Markdown, and the same as one self-contained HTML page
(figures embedded), written from the metrics dict the stage also gives DVC and MLflow."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from pathlib import Path

import markdown

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import write_text
from cxrsynth.tasks.metrics import verdict

FEW_POSITIVES = 20  # below this many test positives an AUROC interval is wide and a p-value fragile

EXPLANATIONS = {
    "Verdict": "Per rare finding, the synthetic variant with the highest mean test AUROC, read against the best "
               "non-generative baseline (real_only included): helps / hurts when p < 0.05, else no detectable effect "
               "at this test size. Both the variant and the baseline are picked on the test split, so read the "
               "verdict with the intervals beside it.",
    "Seeds": "Every variant trains one classifier per seed of classifier.seeds, the same seeds for every variant; each "
             "AUROC is the mean over the seeds, with their standard deviation and range beside it.",
    "AUROC": "Probability that a random positive test image scores above a random negative one (0.5 chance, 1 "
             "perfect), averaged over the seeds. Its 95% interval counts both test-case sampling (a bootstrap over "
             "test patients, a patient's images together) and training-seed noise (the seeds' variance over their "
             "number), on a t distribution with Welch-Satterthwaite degrees of freedom.",
    "p vs real_only": "Test that the variant's seed-averaged AUROC equals the real-only classifier's: the per-seed "
                      "differences (seed s against seed s) averaged, their variance from the same patient bootstrap "
                      "plus the seeds' spread; two-sided, not corrected for the number of variants and findings compared.",
    "Minimum detectable difference": "Smallest AUROC difference this test split and these seeds detect with 80% power "
                                     "in a two-sided test at alpha 0.05: (t(0.975) + t(0.8)) times the difference's "
                                     "standard error (patient bootstrap plus seed variance; the seeded form of "
                                     "Obuchowski & McClish 1997).",
    "Reading": "helps / hurts: p < 0.05. No detectable effect at this test size: p >= 0.05 and the difference within "
               "the minimum detectable difference; an effect that size could be missed, so it is not evidence of no "
               "effect. Inconclusive: p >= 0.05 although the difference exceeds it.",
    "Best non-generative baseline": "Per finding, the baseline (real_only, classical_aug, class_weighted; not the "
                                    "ceiling) with the highest mean test AUROC; each synthetic ratio is also compared "
                                    "with it. Picked on the test split, the choice favours the baseline.",
    "Ceiling share": "(synthetic - real_only) / (ceiling - real_only) of seed-averaged AUROC, where the ceiling trains "
                     "on as many additional real positives as the synthetic ratio adds synthetic ones: 1, as good as "
                     "collecting that much more real data; 0, no gain. 95% interval: test patients and seeds resampled "
                     "jointly for the three variants. Undefined when the ceiling's own gain is not clearly above 0.",
    "Too few positives / negatives": "Below evaluate.min_cases test positives or negatives a finding gets no AUROC, "
                                     "interval or p-value: DeLong's variance collapses with one or two positives "
                                     "(an AUROC of 1 with a zero-width interval).",
    "Site shift": "Each variant's AUROC on the test images of one acquisition site (mean over training seeds, DeLong "
                  "95% interval of that mean, seed standard deviation beside it when there are several). With "
                  "evaluate.train_sites the variants and the diffusion model trained and validated on those sites "
                  "only; the drop is the AUROC on the training sites' test images minus that on the other sites', "
                  "with its interval and two-sided p (the two groups' DeLong variances added).",
    "AUPRC": "Average precision over the precision-recall curve. Chance level is the finding's prevalence, so for "
             "rare findings it shows what AUROC hides: how many of the flagged images are true positives.",
    "Sensitivity at specificity": "Share of positives caught at the best threshold that still calls at least the "
                                  "stated share of negatives negative; an operating point a reader could use.",
    "Macro / rare average": "Mean over the findings with at least evaluate.min_cases test positives and negatives / "
                            "over the rare findings among them (generate.rare_findings); the count of findings "
                            "averaged is given beside it.",
    "FID": "Frechet distance between Gaussians fitted to real and synthetic features (0 = same mean and covariance). "
           "Read it against the real-train-vs-real-test floor; it is biased upwards at small sample sizes.",
    "KID": "Squared maximum mean discrepancy with a cubic polynomial kernel, unbiased, averaged over random subsets; "
           "about 0 for one distribution, more trustworthy than FID with few images.",
    "Template SSIM / PSNR": "Structural similarity and peak signal-to-noise ratio between a synthetic image and the "
                            "real training image whose lesion mask it was conditioned on (a loose pairing).",
    "Condition accuracy": "Share of synthetic images in which the real-only classifier, at its fixed-specificity "
                          "threshold on the real test split, finds the finding that was requested.",
    "Mask IoU": "Overlap (intersection over union) of the conditioning mask and the lesion a U-Net trained on real "
                "masks finds in the synthetic image; the same U-Net's IoU on real test masks is its ceiling.",
    "Lesion SSIM": "SSIM between crops around synthetic lesions and crops around real lesions of the same finding, "
                   "beside the same figure among real lesions; closeness to it means lesion texture is preserved.",
    "Precision / recall / density / coverage": "Naeem et al. 2020: precision and density say how realistic the "
                                               "synthetic images are, recall and coverage how much of the real variety "
                                               "they span; about 1 each when the two sets match.",
    "Memorisation": "Nearest real training image of each synthetic image by pixel correlation (near-copy above the "
                    "threshold) and by feature cosine; real test images searched the same way give the baseline.",
}


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _significant(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _ratio(ratio: float) -> str:
    return "baseline" if ratio == 0 else f"{ratio:g}"


def _p_value(value) -> str:
    if value is None:
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _reading(value) -> str:
    return "n/a" if value is None else value


def _delta(m: dict, against: str) -> str:
    delta = m.get(f"delta_auroc_vs_{against}")
    if delta is None:
        return "n/a"
    return (f"{delta:+.3f} [{m[f'delta_ci_low_vs_{against}']:+.3f}, {m[f'delta_ci_high_vs_{against}']:+.3f}]"
            if m.get(f"delta_ci_low_vs_{against}") is not None else f"{delta:+.3f}")


def _comparison_cells(m: dict, against: str) -> list[str]:
    return [_delta(m, against), _p_value(m.get(f"p_vs_{against}")),
            _number(m.get(f"min_detectable_difference_vs_{against}")), _reading(m.get(f"reading_vs_{against}"))]


def _spread(m: dict) -> list[str]:
    return [_number(m.get("auroc_sd")), f"{_number(m.get('auroc_min'))}–{_number(m.get('auroc_max'))}"]


def _variant_table(finding: str, downstream: dict, variants: Sequence[tuple[str, float]], specificity: float) -> str:
    rows = []
    for variant, ratio in variants:
        m = downstream[variant]["per_finding"][finding]
        comparison = _comparison_cells(m, "real_only") if variant != "real_only" else [""] * 4
        rows.append([
            variant, _ratio(ratio),
            f"{_number(m['auroc'])} [{_number(m['auroc_ci_low'])}, {_number(m['auroc_ci_high'])}]", *_spread(m),
            *comparison, _number(m["auprc"]), _number(m["sensitivity_at_specificity"]),
        ])
    return _table(["variant", "ratio", "mean AUROC [95% CI]", "sd over seeds", "min–max", "delta AUROC [95% CI]",
                   "p vs real_only",
                   "min. detectable difference", "reading vs real_only", "AUPRC",
                   f"sensitivity @ {specificity:.0%} spec."], rows)


def _best_baseline_table(finding: str, downstream: dict, variants: Sequence[tuple[str, float]]) -> str | None:
    """Every synthetic ratio against the finding's best non-generative baseline; None without ratios."""
    ratios = [(variant, ratio) for variant, ratio in variants if ratio > 0]
    if not ratios:
        return None
    best = downstream[ratios[0][0]]["per_finding"][finding].get("best_baseline")
    if best is None:
        return None
    cells = [downstream[variant]["per_finding"][finding] for variant, _ in ratios]
    with_ceiling = any("ceiling_share_status" in cell for cell in cells)
    rows = [[variant, _ratio(ratio), *_comparison_cells(cell, "best_baseline"), *([_share(cell)] if with_ceiling else [])]
            for (variant, ratio), cell in zip(ratios, cells)]
    auroc = downstream[best]["per_finding"][finding]["auroc"]
    return (f"Against the best non-generative baseline on this finding, {best} (mean AUROC {_number(auroc)}):\n\n"
            + _table(["variant", "ratio", "delta AUROC [95% CI]", f"p vs {best}", "min. detectable difference",
                      f"reading vs {best}", *(["ceiling share [95% CI]"] if with_ceiling else [])], rows))


def _share(cell: dict) -> str:
    if cell.get("ceiling_share") is None:
        return _reading(cell.get("ceiling_share_status"))
    return f"{cell['ceiling_share']:.2f} [{_number(cell['ceiling_share_ci_low'], 2)}, {_number(cell['ceiling_share_ci_high'], 2)}]"


def _finding_section(finding: str, metrics: dict, variants: Sequence[tuple[str, float]], specificity: float,
                     figure: str | None) -> str:
    downstream = metrics["downstream"]
    reference = downstream["real_only"]["per_finding"][finding]
    lines = [f"### {finding.replace('_', ' ')}",
             f"Test split: {reference['n_positive']} positive, {reference['n_negative']} negative images."]
    if reference["status"] != "ok":
        lines.append(f"No AUROC, interval or p-value: {reference['status']} in the test split "
                     "(`evaluate.min_cases`).")
        return "\n\n".join(lines)
    if reference["n_positive"] < FEW_POSITIVES:
        lines.append(f"**Caution:** fewer than {FEW_POSITIVES} test positives; intervals are wide and the p-values fragile.")
    lines.append(_variant_table(finding, downstream, variants, specificity))
    against_best = _best_baseline_table(finding, downstream, variants)
    if against_best:
        lines.append(against_best)
    if figure:
        lines.append(f"![ROC curves, {finding}]({figure})")
    return "\n\n".join(lines)


def _averages(metrics: dict, variants: Sequence[tuple[str, float]]) -> str:
    rows = []
    for variant, ratio in variants:
        macro, rare = metrics["downstream"][variant]["macro"], metrics["downstream"][variant]["rare"]
        rows.append([variant, _ratio(ratio), _number(macro["auroc"]), _number(macro["auprc"]),
                     _number(macro["sensitivity_at_specificity"]), _number(rare["auroc"]), _number(rare["auprc"]),
                     _number(rare["sensitivity_at_specificity"])])
    first = metrics["downstream"][variants[0][0]]
    return _table(["variant", "ratio", f"macro AUROC ({first['macro']['n_findings']})", "macro AUPRC",
                   "macro sens.", f"rare AUROC ({first['rare']['n_findings']})", "rare AUPRC", "rare sens."], rows)


def _site_cell(cell: dict) -> str:
    if cell["status"] != "ok":
        return cell["status"]
    spread = f" sd {_number(cell['seed_sd'])}" if cell["seed_sd"] else ""
    return f"{_number(cell['auroc'])} [{_number(cell['auroc_ci_low'])}, {_number(cell['auroc_ci_high'])}]{spread}"


def _drop_cells(drop: dict) -> list[str]:
    if drop["status"] != "ok":
        return [drop["status"], ""]
    return [f"{_number(drop['drop'])} [{_number(drop['drop_ci_low'])}, {_number(drop['drop_ci_high'])}]",
            _p_value(drop["p_value"])]


def _site_table(finding: str, block: dict, variants: Sequence[tuple[str, float]]) -> str:
    test_sites, shifted = block["test_sites"], block["train_sites"] is not None
    header = ["variant", *(f"{site} (training)" if shifted and info["training"] else site
                           for site, info in test_sites.items())]
    if shifted:
        header += ["drop, training to other sites [95%]", "p"]
    rows = []
    for variant, _ in variants:
        scored = block["variants"][variant]
        row = [variant, *(_site_cell(scored["per_site"][site][finding]) for site in test_sites)]
        rows.append(row + (_drop_cells(scored["shift"][finding]) if shifted else []))
    return f"### {finding.replace('_', ' ')} by site\n\n" + _table(header, rows)


def _site_section(metrics: dict, variants: Sequence[tuple[str, float]], rare_findings: Sequence[str]) -> str:
    """Per rare finding, every variant's AUROC per test site and, with evaluate.train_sites, its drop."""
    block = metrics.get("sites")
    if not block or not block["test_sites"]:
        return "## Site shift\n\nThe data source records no acquisition site: no per-site scores."
    counts = ", ".join(f"{site} {info['n_images']}" for site, info in block["test_sites"].items())
    trained = ("every site" if block["train_sites"] is None
               else f"{', '.join(block['train_sites'])} only (`evaluate.train_sites`)")
    lines = [f"Test images per site: {counts}. The variants (and the diffusion model) trained on {trained}."]
    if block["n_without_site"]:
        lines.append(f"{block['n_without_site']} test image(s) without a site are in no site's column.")
    lines.append("Cells below `evaluate.min_cases` test positives or negatives say so and give no statistic; "
                 "every finding's cells are in metrics/evaluate.json (`sites`).")
    parts = ["## Site shift", " ".join(lines)]
    parts += [_site_table(finding, block, variants) for finding in rare_findings]
    return "\n\n".join(parts)


def _synthetic_section(metrics: dict, rare_findings: Sequence[str], figures: dict[str, str]) -> str:
    synthetic = metrics["synthetic"]
    if synthetic is None:
        return "## Synthetic set\n\nNo synthetic images were generated; the synthetic-set metrics are not computed."
    fid = synthetic["fidelity"]
    parts = ["## Synthetic set", f"{synthetic['n_images']} synthetic images; feature space: {fid['feature_space']}."]
    main, floor, pairs = fid["synthetic_vs_real_test"], fid["real_train_vs_real_test"], fid["template_pairs"]
    parts.append("### Fidelity\n\n" + _table(["comparison", "n real", "n other", "FID", "KID (mean +- sd)"], [
        ["synthetic vs real test", str(main["n_real"]), str(main["n_fake"]), _significant(main["fid"]),
         f"{_significant(main['kid_mean'])} +- {_significant(main['kid_std'])}"],
        ["real train vs real test (floor)", str(floor["n_real"]), str(floor["n_fake"]), _significant(floor["fid"]),
         f"{_significant(floor['kid_mean'])} +- {_significant(floor['kid_std'])}"],
    ]) + f"\n\nTemplate pairs: {pairs['n_pairs']}, SSIM {_number(pairs['ssim'])}, PSNR {_number(pairs['psnr'], 1)} dB.")
    lesion = synthetic["lesions"]
    rows = []
    for finding in rare_findings:
        accuracy = lesion["condition_accuracy"][finding]
        adherence = (lesion["mask_adherence"] or {}).get(finding, {})
        ceiling = (lesion["segmenter_on_real_test"] or {}).get(finding, {})
        ssim = lesion["lesion_ssim"][finding]
        rows.append([finding.replace("_", " "), str(accuracy["n_requested_present"]), _number(accuracy["detected"]),
                     f"{_number(adherence.get('iou'))} (n={adherence.get('n', 0)})",
                     f"{_number(ceiling.get('iou'))} (n={ceiling.get('n', 0)})",
                     _number(ssim["ssim"]), _number(ssim["ssim_real_vs_real"])])
    parts.append("### Lesions\n\n" + _table(
        ["finding", "requested", "condition accuracy", "mask IoU", "segmenter IoU on real test",
         "lesion SSIM", "real-vs-real lesion SSIM"], rows))
    by_type = lesion.get("condition_accuracy_by_type") or {}
    if by_type:
        rows = [[kind, *(f"{_number(found.get(f, {}).get('detected'))} (n={found.get(f, {}).get('n', 0)})"
                         for f in rare_findings)] for kind, found in by_type.items()]
        parts.append("Condition accuracy by condition type:\n\n" + _table(
            ["condition", *(f.replace("_", " ") for f in rare_findings)], rows))
    diversity = synthetic["diversity"]
    rows = [[name.replace("_", " "), str(d["n_real"]), str(d["n_fake"]), _number(d["precision"]), _number(d["recall"]),
             _number(d["density"]), _number(d["coverage"])]
            for name, d in [*diversity["per_finding"].items(), ("all images", diversity["overall"])]]
    parts.append(f"### Diversity (k = {diversity['overall']['k']})\n\n" + _table(
        ["finding", "n real train", "n synthetic", "precision", "recall", "density", "coverage"], rows))
    if "embedding" in figures:
        parts.append(f"![Embedding]({figures['embedding']})")
    memo = synthetic["memorisation"]
    rows = [[label, str(m["n"]), str(m["near_copies"]), str(m["feature_matches"]), _number(m["median_correlation"]),
             _number(m["max_correlation"]), _number(m["median_cosine"])]
            for label, m in (("synthetic", memo["synthetic"]), ("real test (baseline)", memo["real_test_baseline"]))]
    parts.append(f"### Memorisation (threshold {memo['threshold']})\n\n" + _table(
        ["searched from", "n", "near-copies (pixels)", "matches (features)", "median correlation",
         "max correlation", "median cosine"], rows))
    if "memorisation" in figures:
        parts.append(f"![Closest synthetic / training pairs]({figures['memorisation']})")
    if "samples" in figures:
        parts.append(f"### Samples\n\n![Real and synthetic samples]({figures['samples']})")
    return "\n\n".join(parts)


def _caveats(metrics: dict) -> str:
    reference = metrics["downstream"]["real_only"]["per_finding"]
    counts = ", ".join(f"{f.replace('_', ' ')} {reference[f]['n_positive']}" for f in FINDINGS)
    items = [
        f"Test positives per finding: {counts}. With tens of positives an AUROC interval spans about +-0.1; a "
        "non-significant p-value is weak evidence of no effect, not evidence of none: read it against the minimum "
        "detectable difference beside it.",
        "p-values are per finding and variant, uncorrected for the number of comparisons; read them as a screen. "
        "The verdict's best synthetic variant is picked on the test split, which favours it a little.",
        "ROC curves are those of the seed-averaged scores; the AUROC in the tables is the mean of the seeds' AUROCs.",
        "Uncertain test labels are left out of that finding; labels not mentioned count as negative.",
        "The default feature space is the real-only classifier's penultimate layer: trained on this collection, "
        "small and task-specific. FID/KID values here are not comparable with Inception-based values elsewhere.",
        "The condition-accuracy threshold comes from the real test split (fixed specificity), so it shares the test "
        "split's sampling noise; the segmenter behind mask IoU is itself imperfect (see its IoU on real masks).",
    ]
    too_few = [f"{f.replace('_', ' ')}: {reference[f]['status']}" for f in FINDINGS if reference[f]["status"] != "ok"]
    if too_few:
        items.append(f"No AUROC, interval or p-value (below `evaluate.min_cases` test cases) for {'; '.join(too_few)}.")
    if metrics.get("quarantined"):
        items.append(f"{metrics['quarantined']} image(s) could not be read and were left out (reports/quarantine.csv).")
    return "## Caveats\n\n" + "\n".join(f"- {item}" for item in items)


def build_markdown(metrics: dict, variants: Sequence[tuple[str, float]], rare_findings: Sequence[str],
                   specificity: float, figures: dict[str, str], reader_study: str | None) -> str:
    """The whole report as Markdown; ``figures`` maps names to paths relative to the report."""
    test = metrics["test_split"]
    parts = [
        "# cxrsynth evaluation",
        f"Every number is measured on the real test split ({test['n_images']} images, never seen in training or "
        f"generation). Variants: {', '.join(v for v, _ in variants)}. Rare findings: "
        f"{', '.join(f.replace('_', ' ') for f in rare_findings)}.",
        "## Verdict",
        verdict.verdict_markdown(metrics["verdict"]) if metrics.get("verdict") else "No rare finding to judge.",
        f"Each AUROC is the mean over {len(metrics.get('seeds') or [1])} training seed(s) "
        f"({', '.join(str(s) for s in metrics.get('seeds') or [])}); intervals and p count both the test patients "
        "and the seeds. The verdict reads the best synthetic variant against the best non-generative baseline; "
        "the tables below give every variant.",
        "## Downstream classification",
        _averages(metrics, variants),
    ]
    if "auroc_by_ratio" in figures:
        parts.append(f"![Rare-finding AUROC against the synthetic ratio, baselines dashed]({figures['auroc_by_ratio']})")
    ordered = list(rare_findings) + [f for f in FINDINGS if f not in rare_findings]
    parts += [_finding_section(f, metrics, variants, specificity, figures.get(f"roc_{f}")) for f in ordered]
    parts.append(_site_section(metrics, variants, rare_findings))
    parts.append(_synthetic_section(metrics, rare_findings, figures))
    if reader_study:
        parts.append(f"## Reader study\n\nA blinded page of real and synthetic images for readers: "
                     f"[{reader_study}]({reader_study}) (the key is kept separately; score answers with "
                     "`python -m cxrsynth.tasks.reader_study KEY ANSWERS... --html SUMMARY.html --mlflow`).")
    parts.append("## What the metrics mean\n\n" + "\n".join(f"- **{name}**: {text}" for name, text in EXPLANATIONS.items()))
    parts.append(_caveats(metrics))
    return "\n\n".join(parts) + "\n"


def _embed_images(body: str, root: Path) -> str:
    def embed(match: re.Match) -> str:
        path = root / match.group(1)
        if not path.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode("ascii")}"'

    return re.sub(r'src="([^":]+\.png)"', embed, body)


def write_report(text: str, markdown_path: str | Path, html_path: str | Path) -> None:
    """Write the Markdown and the self-contained HTML (figures embedded) beside it."""
    markdown_path, html_path = Path(markdown_path), Path(html_path)
    write_text(markdown_path, text)
    body = _embed_images(markdown.markdown(text, extensions=["tables"]), html_path.parent)
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    write_text(html_path, f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>cxrsynth evaluation'
                          f"</title><style>{style}</style></head><body>\n{body}\n</body></html>\n")
