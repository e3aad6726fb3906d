"""The reader-study page, rendered from the Jinja2 template shipped with the package
(``templates/index.html.j2``; its header comment is the page's DOM contract)."""

from __future__ import annotations

import functools

import jinja2

TEMPLATE = "index.html.j2"
SOURCES = ("real", "synthetic")
LIKERT = (1, 2, 3, 4, 5)


@functools.cache
def environment() -> jinja2.Environment:
    # PackageLoader finds the templates through the import system, so an installed (or editable)
    # cxrsynth finds them wherever site-packages is; autoescape guards finding names
    return jinja2.Environment(loader=jinja2.PackageLoader("cxrsynth.tasks.reader_study", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"]),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_page(items: list[dict], study: str) -> str:
    """The self-contained study page: ``items`` are the study's {"item", "finding", "png"} dicts in
    the order readers see them, ``png`` base64 without its data-URI prefix."""
    return environment().get_template(TEMPLATE).render(items=items, study=study, sources=SOURCES, likert=LIKERT)
