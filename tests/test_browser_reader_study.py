"""The reader-study page as a radiologist uses it, opened from a file and from a local web server.

The page follows the DOM contract at the top of tasks/reader_study/templates/index.html.j2. A
reader answers half the images with the keyboard and half with the mouse, reloads midway, is asked
to confirm an incomplete export, and the exported file goes through the scorer's command line with
answers planned against the key, so the scorer's counts are known.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.browser import free_port, running_server, screenshot

pytestmark = pytest.mark.browser
PER_SOURCE = 4  # real and as many synthetic images


def _study(root: Path) -> tuple[Path, dict]:
    """A study of seeded noise images; the page in root/reader_study, the key beside that folder."""
    from cxrsynth.tasks.reader_study import Candidate, build_study, write_study

    rng = np.random.default_rng(7)
    pools = {source: [Candidate(rng.random((32, 32)), source, ("pneumothorax", "nodule")[i % 2], f"img-{source}-{i:03d}")
                      for i in range(PER_SOURCE + 2)] for source in ("real", "synthetic")}
    items, key = build_study(pools["real"], pools["synthetic"], PER_SOURCE, seed=3)
    page_path, key_path = root / "reader_study" / "index.html", root / "reader_study_key.json"
    write_study(items, key, page_path, key_path)
    return page_path, key


def _planned(key: dict) -> dict[str, dict]:
    """Every fourth call wrong, ratings cycling 1..5, in the page's item order."""
    plan = {}
    for index, (item, truth) in enumerate(key["items"].items()):
        wrong = {"real": "synthetic", "synthetic": "real"}[truth["truth"]]
        plan[item] = {"source": wrong if index % 4 == 3 else truth["truth"], "likert": 1 + index % 5}
    return plan


def _answer(page, index: int, answer: dict) -> None:
    """Even positions by keyboard, odd ones by mouse; then on to the next image."""
    item = f"item-{index + 1:03d}"
    section = page.locator(f"section#{item}")
    assert section.is_visible() and page.locator("section.item:not([hidden])").count() == 1
    assert section.locator("img.radiograph").evaluate("img => img.complete && img.naturalWidth") == 32
    if index % 2 == 0:
        page.keyboard.press(answer["source"][0])  # r / s
        page.keyboard.press(str(answer["likert"]))
        page.keyboard.press("ArrowRight")
    else:
        section.locator(f'input[name="{item}-source"][value="{answer["source"]}"]').click()
        section.locator(f'input[name="{item}-likert"][value="{answer["likert"]}"]').click()
        page.locator("#next").click()


def _checked_answers(page) -> dict[str, dict]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('section.item')].map(s => {
        const checked = field => s.querySelector(`input[data-field="${field}"]:checked`);
        return [s.dataset.item, {source: checked('source')?.value, likert: checked('likert') && Number(checked('likert').value)}];
    }))""")


def _export(page, accept: bool | None) -> dict | None:
    """Press Export; answer the confirm dialog when one comes. The downloaded answers, or None."""
    downloads = []

    def keep(download) -> None:
        downloads.append(download)

    page.on("download", keep)
    if accept is not None:
        page.once("dialog", lambda dialog: dialog.accept() if accept else dialog.dismiss())
    page.locator("#export").click()
    page.wait_for_function("() => document.getElementById('status').textContent.length > 0")
    page.wait_for_timeout(300)  # a download, if any, is announced by now
    page.remove_listener("download", keep)
    if not downloads:
        return None
    return json.loads(Path(downloads[0].path()).read_text())


def _scored(tmp_path: Path, answers: dict, key_path: Path) -> dict:
    from cxrsynth.tasks.reader_study.cli import main

    answers_path, result_path = tmp_path / "answers.json", tmp_path / "score.json"
    answers_path.write_text(json.dumps(answers))
    assert main([str(key_path), str(answers_path), "--json", str(result_path)]) in (0, None)
    return json.loads(result_path.read_text())


@pytest.fixture(params=["file", "http"])
def study_url(request, tmp_path):
    """The page's URL opened from file:// and from a web server on 127.0.0.1, and its key."""
    page_path, key = _study(tmp_path)
    if request.param == "file":
        yield page_path.as_uri(), key, request.param
        return
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(page_path.parent)]
    with running_server(command, f"http://127.0.0.1:{port}/index.html", "reader_study_http", timeout=30):
        yield f"http://127.0.0.1:{port}/index.html", key, request.param


def test_reader_study_page_records_survives_reload_and_exports_what_the_scorer_reads(study_url, tmp_path, page):
    url, key, origin = study_url
    html = (tmp_path / "reader_study" / "index.html").read_text()
    truths = [entry["truth"] for entry in key["items"].values()]
    assert sorted(truths) != truths and sorted(truths, reverse=True) != truths, "not shuffled: sources in runs"
    assert not any(entry["image_id"] in html for entry in key["items"].values()), "the page names source images"

    page.goto(url)
    n = len(key["items"])
    assert page.locator("#study").get_attribute("data-n-items") == str(n)
    assert [s.get_attribute("data-item") for s in page.locator("section.item").all()] == list(key["items"])
    plan = _planned(key)
    half = n // 2
    for index, (item, answer) in enumerate(list(plan.items())[:half]):
        _answer(page, index, answer)
    page.reload()
    assert page.locator("#progress").inner_text() == f"{half} of {n} answered"
    assert page.locator("#position").inner_text() == f"Image {half + 1} of {n}"
    assert {i: a for i, a in _checked_answers(page).items() if a["source"]} == dict(list(plan.items())[:half])

    page.locator("#reader").fill("reader A")
    assert _export(page, accept=False) is None  # incomplete, and the reader cancels
    assert "Not exported" in page.locator("#status").inner_text()
    partial = _export(page, accept=True)  # incomplete, and the reader confirms
    assert partial["complete"] is False and partial["answers"] == dict(list(plan.items())[:half])

    for index, (item, answer) in enumerate(list(plan.items())[half:], start=half):
        page.locator(f"section#{item}").wait_for()  # the previous answer moved on to this image
        _answer(page, index, answer)
    assert page.locator("#progress").inner_text() == f"{n} of {n} answered"
    screenshot(page, f"reader_study_{origin}")
    exported = _export(page, accept=None)  # complete: no question asked
    assert exported["complete"] is True and exported["study"] == key["study"] and exported["reader"] == "reader A"
    assert exported["answers"] == plan

    result = _scored(tmp_path, exported, tmp_path / "reader_study_key.json")
    wrong = sum(1 for index in range(n) if index % 4 == 3)
    assert result["pooled"]["turing"]["n_calls"] == n and result["pooled"]["turing"]["n_correct"] == n - wrong
    ratings = {source: [plan[i]["likert"] for i, e in key["items"].items() if e["truth"] == source]
               for source in ("real", "synthetic")}
    for source, values in ratings.items():
        assert result["pooled"]["likert"][source]["mean"] == pytest.approx(np.mean(values))
    assert not page.errors, page.errors
