"""The params reference: every key of params.yaml with its type, default and meaning, as Markdown.

Rendered from the pydantic model in ``tasks/params.py`` (types, Field bounds, defaults and
descriptions), so the README's copy cannot drift from the code: a test compares the two.
``python -m tasks.params_reference`` prints it; ``--write README.md`` replaces the text between the
markers in that file.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel

from cxrsynth.tasks.io import write_text
from cxrsynth.tasks.params import Params, Section

START = "<!-- params-reference:start -->"
END = "<!-- params-reference:end -->"
FIX_COMMAND = "python -m tasks.params_reference --write README.md"


@dataclass(frozen=True)
class Entry:
    """One leaf key of the params file."""

    key: str
    type: str
    default: str
    meaning: str


def is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Section)


def entries(model: type[BaseModel] = Params, defaults: dict | None = None, prefix: str = "") -> Iterator[Entry]:
    """Every leaf field of ``model``, nested sections walked, keys dotted, in declaration order."""
    defaults = model().model_dump(mode="json") if defaults is None else defaults
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if is_section(field.annotation):
            yield from entries(field.annotation, defaults[name], f"{key}.")
        else:
            yield Entry(key, type_text(field.annotation, field.metadata), default_text(defaults[name]),
                        field.description or "")


def _is_union(annotation: object) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def annotation_text(annotation: object) -> str:
    """A readable type: Literal choices joined by |, list[...], [a, b] for a fixed-length tuple."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(str(choice) for choice in args)
    if _is_union(annotation):
        return " | ".join(annotation_text(arg) for arg in args)
    if origin is list:
        return f"list[{annotation_text(args[0])}]"
    if origin is dict:
        return f"dict[{annotation_text(args[0])}, {annotation_text(args[1])}]"
    if origin is tuple:
        return "[" + ", ".join(annotation_text(arg) for arg in args) + "]"
    return annotation.__name__


# Field bounds as pydantic stores them: the constraint's attribute and its sign left of the value.
LOWER = {annotated_types.Ge: ("ge", "≤"), annotated_types.Gt: ("gt", "<")}
UPPER = {annotated_types.Le: ("le", "≤"), annotated_types.Lt: ("lt", "<")}
MIRRORED = {"≤": "≥", "<": ">"}


def _bound(metadata: Sequence, kinds: dict) -> tuple[str, str] | None:
    """(sign, value) of the first constraint of one of ``kinds`` in a Field's metadata."""
    for constraint in metadata:
        if type(constraint) in kinds:
            attribute, sign = kinds[type(constraint)]
            return sign, f"{getattr(constraint, attribute):g}"
    return None


def bounded(text: str, metadata: Sequence) -> str:
    """``text`` with the Field's bounds around it: ``0 ≤ float ≤ 1``, ``int ≥ 1``, ``float < 1``."""
    low, high = _bound(metadata, LOWER), _bound(metadata, UPPER)
    if low and high:
        return f"{low[1]} {low[0]} {text} {high[0]} {high[1]}"
    if low:
        return f"{text} {MIRRORED[low[0]]} {low[1]}"
    if high:
        return f"{text} {high[0]} {high[1]}"
    return text


def type_text(annotation: object, metadata: Sequence = ()) -> str:
    """The field's type with its bounds; an optional field reads ``... or null``."""
    args = get_args(annotation)
    if _is_union(annotation) and type(None) in args:
        kept = [arg for arg in args if arg is not type(None)]
        return f"{type_text(Union[tuple(kept)], metadata)} or null"
    return bounded(annotation_text(annotation), metadata)


def default_text(value: object) -> str:
    """A default as it would be written in params.yaml (flow style, one line)."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).removesuffix("...\n").strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(rows: list[Entry]) -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{row.key}` | {_cell(row.type)} | `{_cell(row.default)}` | {_cell(row.meaning)} |" for row in rows]
    return "\n".join(lines)


def render(model: type[BaseModel] = Params) -> str:
    """The reference: the top-level keys in a general table, then one table per section."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries(model):
        section = entry.key.split(".")[0] if "." in entry.key else ""
        groups.setdefault(section, []).append(entry)
    blocks = []
    for section, rows in groups.items():
        heading, description = (f"`{section}`", model.model_fields[section].description) if section else ("General", None)
        blocks += [f"### {heading}", description, table(rows)]
    return "\n\n".join(block for block in blocks if block)


def replace_between_markers(text: str, content: str, source: str = "text") -> str:
    """``text`` with everything between the START and END markers replaced by ``content``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{source}: needs exactly one {START} followed by one {END}")
    before, rest = text.split(START)
    _, after = rest.split(END)
    return f"{before}{START}\n\n{content}\n\n{END}{after}"  # blank lines: the last table ends before END


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the params reference (Markdown) generated from tasks/params.py.")
    parser.add_argument("--write", metavar="FILE", help=f"replace the text between {START} and {END} in FILE")
    args = parser.parse_args(argv)
    reference = render()
    if args.write is None:
        print(reference)
        return
    path = Path(args.write)
    write_text(path, replace_between_markers(path.read_text(), reference, str(path)))


if __name__ == "__main__":
    main()
