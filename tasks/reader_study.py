"""Reader study kit: a blinded, randomised set of real and synthetic radiographs as one
self-contained HTML page, and the scoring of the answers readers download from it.

The page embeds every image as a base64 PNG, all encoded the same way (8-bit greyscale, no
metadata) so nothing in the file tells real from synthetic; items are numbered in a seeded random
order. For each item a reader says "real" or "synthetic" and rates, on a 1-5 Likert scale, how
acceptable it is as an example of the named finding. Answers stay in the page (and the browser's
local storage) and download as JSON. The key (which item is which) is written separately.

Scoring: the share of correct real/synthetic calls against chance (0.5) with a two-sided exact
binomial test; readers who cannot beat chance cannot tell the synthetic images apart. Likert means
per finding, for real and synthetic images separately. ``python -m tasks.reader_study KEY ANSWERS...``
prints the score of one or more answer files.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import binomtest

from cxrsynth.tasks.io import write_json, write_text

SOURCES = ("real", "synthetic")
LIKERT = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Candidate:
    """One image that may enter the study: its pixels (H, W) in [0, 1], source, finding and id."""

    image: np.ndarray
    source: str
    finding: str
    image_id: str


def png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_study(real: Sequence[Candidate], synthetic: Sequence[Candidate], per_source: int, seed: int) -> tuple[list[dict], dict]:
    """Draw up to ``per_source`` images of each source (seeded), shuffle them together and number
    them; return the page's items (no truth in them) and the key."""
    rng = np.random.default_rng(seed)
    chosen = [candidates[i] for candidates in (real, synthetic)
              for i in sorted(rng.permutation(len(candidates))[:per_source])]
    order = rng.permutation(len(chosen))
    items, key_items = [], {}
    for number, index in enumerate(order, start=1):
        candidate = chosen[index]
        item = f"item-{number:03d}"
        items.append({"item": item, "finding": candidate.finding, "png": png_base64(candidate.image)})
        key_items[item] = {"truth": candidate.source, "finding": candidate.finding, "image_id": candidate.image_id}
    study = hashlib.sha256(json.dumps(key_items, sort_keys=True).encode()).hexdigest()[:12]
    return items, {"study": study, "items": key_items}


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cxrsynth reader study {study}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; }}
.item {{ border: 1px solid #ccc; padding: 1em; margin: 1em 0; display: flex; gap: 1.5em; }}
.item img {{ width: 320px; height: 320px; background: #000; }}
fieldset {{ border: none; padding: 0; margin: 0 0 1em 0; }}
</style></head><body>
<h1>Chest radiograph reader study</h1>
<p>Study <code>{study}</code>: {n} images, some real and some synthetic, in random order. For each
image: is it <b>real</b> or <b>synthetic</b>? And how acceptable is it as an example of the named
finding (1 = not at all, 5 = fully)? Your answers are kept in this page (also after a reload, in
this browser); when you are done, press <i>Download answers</i> and send the JSON file back.</p>
<p><label>Reader: <input id="reader" type="text"></label> <span id="progress"></span></p>
{items}
<p><button id="download">Download answers</button></p>
<script>
const STUDY = "{study}";
const store = "cxrsynth-reader-study-" + STUDY;
let answers = JSON.parse(localStorage.getItem(store) || "{{}}");
function save() {{
  localStorage.setItem(store, JSON.stringify(answers));
  const done = Object.values(answers).filter(a => a.source && a.likert).length;
  document.getElementById("progress").textContent = done + " of {n} answered";
}}
document.querySelectorAll("input[type=radio]").forEach(input => {{
  const [item, field] = [input.dataset.item, input.dataset.field];
  if (answers[item] && String(answers[item][field]) === input.value) input.checked = true;
  input.addEventListener("change", () => {{
    answers[item] = answers[item] || {{}};
    answers[item][field] = field === "likert" ? Number(input.value) : input.value;
    save();
  }});
}});
document.getElementById("download").addEventListener("click", () => {{
  const payload = {{study: STUDY, reader: document.getElementById("reader").value, answers: answers}};
  const blob = new Blob([JSON.stringify(payload, null, 2)], {{type: "application/json"}});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "reader_study_" + STUDY + ".json";
  link.click();
}});
save();
</script></body></html>
"""


def _item_html(item: dict) -> str:
    name = html.escape(item["item"])
    finding = html.escape(item["finding"].replace("_", " "))
    source = " ".join(
        f'<label><input type="radio" name="{name}-source" data-item="{name}" data-field="source" value="{s}"> {s}</label>'
        for s in SOURCES)
    likert = " ".join(
        f'<label><input type="radio" name="{name}-likert" data-item="{name}" data-field="likert" value="{v}"> {v}</label>'
        for v in LIKERT)
    return (f'<div class="item"><img alt="{name}" src="data:image/png;base64,{item["png"]}">'
            f"<div><h3>{name}</h3><p>Finding: <b>{finding}</b></p>"
            f"<fieldset><legend>Real or synthetic?</legend>{source}</fieldset>"
            f"<fieldset><legend>Acceptable as an example of {finding} (1-5)?</legend>{likert}</fieldset></div></div>")


def render_page(items: list[dict], study: str) -> str:
    return _PAGE.format(study=study, n=len(items), items="\n".join(_item_html(item) for item in items))


def write_study(items: list[dict], key: dict, page_path: str | Path, key_path: str | Path) -> None:
    """The page for readers and, in another place, the key."""
    write_text(page_path, render_page(items, key["study"]))
    write_json(key_path, key)


def score(answer_sets: Sequence[dict], key: dict) -> dict:
    """Pool the answers of one or more readers against the key: accuracy of the real/synthetic
    calls with an exact two-sided binomial test against 0.5, and Likert means per finding and source."""
    calls, likert = [], {}
    for answers in answer_sets:
        if answers.get("study") != key["study"]:
            raise ValueError(f"answers are for study {answers.get('study')!r}, the key is for {key['study']!r}")
        for item, answer in answers.get("answers", {}).items():
            if item not in key["items"]:
                raise ValueError(f"answers name {item!r}, which is not in study {key['study']}")
            truth = key["items"][item]
            if answer.get("source") in SOURCES:
                calls.append(answer["source"] == truth["truth"])
            if answer.get("likert") in LIKERT:
                likert.setdefault(truth["finding"], {}).setdefault(truth["truth"], []).append(answer["likert"])
    n, correct = len(calls), int(sum(calls))
    return {
        "study": key["study"], "readers": len(answer_sets), "n_calls": n, "n_correct": correct,
        "accuracy": correct / n if n else None,
        "p_value_vs_chance": float(binomtest(correct, n, 0.5).pvalue) if n else None,
        "likert": {finding: {source: {"n": len(values), "mean": float(np.mean(values))}
                             for source, values in sorted(by_source.items())}
                   for finding, by_source in sorted(likert.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score reader-study answers against the key.")
    parser.add_argument("key", type=Path)
    parser.add_argument("answers", type=Path, nargs="+")
    args = parser.parse_args(argv)
    key = json.loads(args.key.read_text())
    print(json.dumps(score([json.loads(path.read_text()) for path in args.answers], key), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
