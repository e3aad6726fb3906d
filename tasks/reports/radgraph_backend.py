"""The RadGraph backend: the ``radgraph`` package's entity and relation model, from local weights only.

RadGraph downloads its weights from the Hugging Face hub when its folder is missing; cxrsynth never
lets it. ``load_radgraph`` checks ``<model_cache_dir>/<model_type>/{config.json, vocabulary/,
weights.th}`` first and fails naming what to put where, then loads with the hub switched off, so
the transformer that config.json names for its tokenizer and encoder config must be in the local
Hugging Face cache or be a local folder.

``radgraph_findings`` turns one report's RadGraph annotation (the package's own output format:
``{"text": "tokens joined by spaces", "entities": {"1": {"tokens", "label", "start_ix", "end_ix",
"relations": [["located_at", "2"], ...]}}}``) into findings. Each main observation (one that
modifies no other observation) is read as a phrase: its tokens, the observations that modify it,
the anatomy it is ``located_at`` and the anatomy modifying that, in text order. The finding
lexicon finds the finding in the phrase ("enlarged" at "cardiac silhouette" is cardiomegaly),
the labels give the state (definitely present / uncertain / definitely absent, in RadGraph's or
RadGraph-XL's spelling), the attribute reader gives side, zone and size. An observation
``suggestive_of`` another lends it its anatomy when the other has none ("left basal opacity
suggestive of pneumonia"). An observation ``suggestive_of`` a look-alike (a nipple shadow, a skin
fold: tasks.reports.lexicon.LOOK_ALIKES), or a descriptive one ("nodular opacity") suggestive of
another finding, is explained away as the rule parser reads it: absent, or uncertain when the
explanation is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from unittest import mock

from tqdm import tqdm

from cxrsynth.tasks.findings import ABSENT, PRESENT, UNCERTAIN
from cxrsynth.tasks.reports.attributes import read_attributes
from cxrsynth.tasks.reports.lexicon import Mention, find_look_alikes, find_mentions, normalise
from cxrsynth.tasks.reports.negation import apply_assertion
from cxrsynth.tasks.reports.records import FindingState, combine
from cxrsynth.tasks.reports.sections import report_body

REQUIRED_FILES = ("config.json", "vocabulary", "weights.th")
_SUFFIX_STATES = {"definitely present": PRESENT, "uncertain": UNCERTAIN, "definitely absent": ABSENT,
                  "DP": PRESENT, "U": UNCERTAIN, "DA": ABSENT}


class RadGraphModelError(ValueError):
    """RadGraph weights that are missing or cannot be loaded offline; the message says what to put where."""


def model_folder(model_type: str, model_cache_dir: str | Path | None) -> Path:
    """The checked folder holding one RadGraph model's files."""
    from radgraph.radgraph import MODEL_MAPPING

    if model_type not in MODEL_MAPPING:
        raise RadGraphModelError(
            f"parse_reports.radgraph.model_type {model_type!r} is not a RadGraph model; "
            f"expected one of {', '.join(MODEL_MAPPING)}"
        )
    archive = MODEL_MAPPING[model_type]
    how = (f"download {archive} from the Hugging Face repository StanfordAIMI/RRG_scorers on a machine with network "
           f"access and extract it so that the folder holds {', '.join(REQUIRED_FILES)}")
    if model_cache_dir is None:
        raise RadGraphModelError(
            f"parse_reports.backend is 'radgraph' but parse_reports.radgraph.model_cache_dir is not set: "
            f"set it to a folder containing {model_type}/ ({how})"
        )
    folder = Path(model_cache_dir) / model_type
    missing = [name for name in REQUIRED_FILES if not (folder / name).exists()]
    if missing:
        raise RadGraphModelError(
            f"{folder}: RadGraph model files missing: {', '.join(missing)} (parse_reports.radgraph.model_cache_dir="
            f"{model_cache_dir}); {how} into {folder}/"
        )
    return folder


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Refuse every Hugging Face hub request while RadGraph loads (its tokenizer and encoder config)."""
    import huggingface_hub.constants
    import transformers.utils.hub

    with mock.patch.object(huggingface_hub.constants, "HF_HUB_OFFLINE", True), \
            mock.patch.object(transformers.utils.hub, "_is_offline_mode", True):
        yield


def load_radgraph(model_type: str, model_cache_dir: str | Path | None, batch_size: int = 1, device: str = "cpu"):
    """A ``radgraph.RadGraph`` from local files only, on "cpu", "cuda" or "auto"."""
    folder = model_folder(model_type, model_cache_dir)
    from radgraph import RadGraph

    cuda = {"cpu": -1, "cuda": 0, "auto": None}[device]
    with hub_offline():
        try:
            return RadGraph(
                model_type=model_type, model_cache_dir=str(model_cache_dir), batch_size=batch_size, cuda=cuda
            )
        except OSError as exc:
            raise RadGraphModelError(
                f"{folder / 'config.json'}: the transformer it names (model_name, for the tokenizer and encoder "
                f"config) is not available offline; put that model's config and tokenizer files in the Hugging Face "
                f"cache or in a local folder and set model_name to it: {exc}"
            ) from None


def observation_state(label: str) -> int | None:
    """State of an Observation label (RadGraph-XL "Observation::uncertain", RadGraph "OBS-U"); None for anatomy."""
    if label.startswith("OBS-"):
        return _SUFFIX_STATES.get(label[4:])
    if label.startswith("Observation"):
        return _SUFFIX_STATES.get(label.split("::")[-1])
    return None


def _targets(entity: Mapping, relation: str) -> list[str]:
    return [str(target) for name, target in entity.get("relations", []) if name == relation]


def _closure(start: str, incoming: Mapping[str, list[str]]) -> list[str]:
    """``start`` and every entity that modifies it, directly or through other modifiers (cycles tolerated)."""
    seen, stack = [], [start]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.append(current)
            stack.extend(incoming.get(current, []))
    return seen


def _sentence_of(tokens: list[str], index: int) -> str:
    start = max((i + 1 for i in range(index) if tokens[i] == "."), default=0)
    end = next((i + 1 for i in range(index, len(tokens)) if tokens[i] == "."), len(tokens))
    return " ".join(tokens[start:end])


def _chain_state(keys: list[str], entities: Mapping[str, Mapping]) -> int:
    """The state of an observation read with its modifiers: absent if any is absent, else uncertain if any is."""
    states = {observation_state(entities[k]["label"]) for k in keys}
    return ABSENT if ABSENT in states else UNCERTAIN if UNCERTAIN in states else PRESENT


def _phrase(keys: list[str], entities: Mapping[str, Mapping]) -> str:
    parts = sorted(set(keys), key=lambda k: int(entities[k]["start_ix"]))
    return normalise(" ".join(str(entities[k]["tokens"]) for k in parts))


def _explanation(key: str, mention: Mention, entities: Mapping[str, Mapping],
                 modifiers: Mapping[str, list[str]]) -> int | None:
    """ABSENT (UNCERTAIN) when the observation is ``suggestive_of`` a look-alike stated present (uncertain), or, for a
    descriptive term ("nodular opacity"), of another finding: the rule parser's alternative explanation."""
    for target in _targets(entities[key], "suggestive_of"):
        if target not in entities or observation_state(entities[target]["label"]) is None:
            continue
        chain = [k for k in _closure(target, modifiers) if observation_state(entities[k]["label"]) is not None]
        phrase = _phrase(chain, entities)
        other_finding = mention.term.descriptive and any(m.finding != mention.finding for m in find_mentions(phrase))
        state = _chain_state(chain, entities)
        if (find_look_alikes(phrase) or other_finding) and state != ABSENT:
            return ABSENT if state == PRESENT else UNCERTAIN
    return None


def radgraph_findings(annotation: Mapping) -> dict[str, FindingState]:
    """Findings of one report from its RadGraph annotation (see the module docstring for the format)."""
    entities: Mapping[str, Mapping] = annotation.get("entities", {})
    tokens = str(annotation.get("text", "")).split(" ")
    modifiers: dict[str, list[str]] = {}
    for key, entity in entities.items():
        for target in _targets(entity, "modify"):
            if target in entities and target != key:
                modifiers.setdefault(target, []).append(key)
    observations = [key for key, entity in entities.items()
                    if observation_state(entity["label"]) is not None
                    and not any(t in entities and observation_state(entities[t]["label"]) is not None
                                for t in _targets(entity, "modify"))]

    def anatomy_of(key: str) -> list[str]:
        located = [t for t in _targets(entities[key], "located_at") if t in entities and t != key]
        return [part for anatomy in located for part in _closure(anatomy, modifiers)]

    lent_anatomy: dict[str, list[str]] = {}
    for key in observations:
        for target in _targets(entities[key], "suggestive_of"):
            lent_anatomy.setdefault(target, []).extend(anatomy_of(key))

    mentions = []
    for key in sorted(observations, key=lambda k: int(entities[k]["start_ix"])):
        chain = [k for k in _closure(key, modifiers) if observation_state(entities[k]["label"]) is not None]
        label_state = _chain_state(chain, entities)
        phrase = _phrase(chain + (anatomy_of(key) or lent_anatomy.get(key, [])), entities)
        sentence = _sentence_of(tokens, int(entities[key]["start_ix"]))
        for mention in find_mentions(phrase):
            term = mention.term
            state = term.state if term.fixed else apply_assertion(term.state, label_state)
            explained = None if term.fixed or state == ABSENT else _explanation(key, mention, entities, modifiers)
            attributes = read_attributes(phrase, mention.finding)
            mentions.append((mention.finding, FindingState(
                state=state if explained is None else explained,
                laterality=attributes.laterality,
                location=attributes.location,
                severity=attributes.severity or term.severity,
                sentence=sentence,
            )))
    return combine(mentions)


def parse_reports_radgraph(
    texts: Sequence[str | None], model, batch_size: int = 8, progress: bool = True
) -> list[dict[str, FindingState]]:
    """Findings of each report with a loaded RadGraph model; each distinct report body is run once."""
    bodies = [" ".join(report_body(text).split()) for text in texts]
    distinct = [body for body in dict.fromkeys(bodies) if body]
    parsed: dict[str, dict[str, FindingState]] = {"": {}}
    chunks = [distinct[i: i + batch_size] for i in range(0, len(distinct), batch_size)]
    for chunk in tqdm(chunks, desc="parse reports (radgraph)", unit="batch", disable=not progress):
        annotations = model(chunk)
        for index, body in enumerate(chunk):
            parsed[body] = radgraph_findings(annotations.get(str(index), {}))
    return [parsed[body] for body in bodies]
