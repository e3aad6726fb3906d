import json
import string

import pytest

from cxrsynth.tasks.params import ParseReportsParams, RadGraphParams
from cxrsynth.tasks.reports.radgraph_backend import (
    RadGraphModelError,
    hub_offline,
    load_radgraph,
    model_folder,
    observation_state,
    parse_reports_radgraph,
    radgraph_findings,
)

XL_LABELS = ["Observation::definitely present", "Observation::uncertain", "Observation::definitely absent",
             "Anatomy::definitely present"]
RADGRAPH_LABELS = ["OBS-DP", "OBS-U", "OBS-DA", "ANAT-DP"]


def entity(tokens, label, start, relations=()):
    return {"tokens": tokens, "label": label, "start_ix": start, "end_ix": start + len(tokens.split()) - 1,
            "relations": [list(r) for r in relations]}


DP, UNC, DA, ANAT = XL_LABELS
# RadGraph-XL output for "Small right apical pneumothorax . No pleural effusion . Heart enlarged . Left basilar opacity
# suggestive of pneumonia . Possible atelectasis ." in the package's format (radgraph.utils.postprocess_reports).
ANNOTATION = {
    "text": "Small right apical pneumothorax . No pleural effusion . Heart enlarged . "
            "Left basilar opacity suggestive of pneumonia . Possible atelectasis .",
    "entities": {
        "1": entity("Small", DP, 0, [("modify", "4")]),
        "2": entity("right", ANAT, 1, [("modify", "3")]),
        "3": entity("apical", ANAT, 2),
        "4": entity("pneumothorax", DP, 3, [("located_at", "3")]),
        "5": entity("pleural", ANAT, 6),
        "6": entity("effusion", DA, 7, [("located_at", "5")]),
        "7": entity("Heart", ANAT, 9),
        "8": entity("enlarged", DP, 10, [("located_at", "7")]),
        "9": entity("Left", ANAT, 12, [("modify", "10")]),
        "10": entity("basilar", ANAT, 13),
        "11": entity("opacity", DP, 14, [("located_at", "10"), ("suggestive_of", "12")]),
        "12": entity("pneumonia", UNC, 17),
        "13": entity("atelectasis", UNC, 20),
    },
    "data_source": None,
    "data_split": "inference",
}


def test_conversion_of_radgraph_xl_output():
    found = radgraph_findings(ANNOTATION)
    assert set(found) == {"pneumothorax", "pleural_effusion", "cardiomegaly", "consolidation", "atelectasis"}
    ptx = found["pneumothorax"]
    assert (ptx.state, ptx.laterality, ptx.location, ptx.severity) == (1, "right", "apical", "mild")
    assert ptx.sentence == "Small right apical pneumothorax ."
    assert found["pleural_effusion"].state == 0
    assert found["cardiomegaly"].state == 1
    pneumonia = found["consolidation"]
    assert (pneumonia.state, pneumonia.laterality, pneumonia.location) == (-1, "left", "basal")
    assert found["atelectasis"].state == -1


def test_absent_modifier_negates_the_observation():
    annotation = {"text": "no large effusion", "entities": {
        "1": entity("no", DA, 0, [("modify", "3")]),
        "2": entity("large", DP, 1, [("modify", "3")]),
        "3": entity("effusion", DP, 2),
    }}
    assert radgraph_findings(annotation)["pleural_effusion"].state == 0


def test_original_radgraph_labels_and_cycles():
    annotation = {"text": "possible left effusion", "entities": {
        "1": entity("possible", "OBS-U", 0, [("modify", "3")]),
        "2": entity("left", "ANAT-DP", 1, [("modify", "4"), ("modify", "2")]),
        "3": entity("effusion", "OBS-DP", 2, [("located_at", "4"), ("located_at", "99")]),
        "4": entity("pleura", "ANAT-DP", 2, [("modify", "2")]),
    }}
    found = radgraph_findings(annotation)["pleural_effusion"]
    assert (found.state, found.laterality) == (-1, "left")


@pytest.mark.parametrize("label, state", [
    ("Observation::definitely present", 1), ("Observation::measurement::definitely absent", 0),
    ("Observation::uncertain", -1), ("OBS-DA", 0), ("OBS-U", -1),
    ("Anatomy::definitely present", None), ("ANAT-DP", None),
])
def test_observation_state(label, state):
    assert observation_state(label) == state


def test_missing_cache_dir_says_what_to_set():
    with pytest.raises(RadGraphModelError, match="model_cache_dir is not set.*radgraph-xl.tar.gz.*RRG_scorers"):
        model_folder("radgraph-xl", None)


def test_missing_files_are_named_and_nothing_is_created_or_downloaded(tmp_path):
    (tmp_path / "radgraph-xl").mkdir()
    (tmp_path / "radgraph-xl" / "config.json").write_text("{}")
    with pytest.raises(RadGraphModelError, match=r"radgraph-xl: RadGraph model files missing: vocabulary, weights.th"):
        load_radgraph("radgraph-xl", tmp_path)
    with pytest.raises(RadGraphModelError, match="missing: config.json"):
        load_radgraph("radgraph", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["radgraph-xl"]


def test_unknown_model_type_is_named(tmp_path):
    with pytest.raises(RadGraphModelError, match="'radgraph-xxl' is not a RadGraph model"):
        model_folder("radgraph-xxl", tmp_path)


def test_hub_offline_is_restored():
    import huggingface_hub.constants

    before = huggingface_hub.constants.HF_HUB_OFFLINE
    with hub_offline():
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before


# --- the real loading and inference code, on a tiny model built here ------------------------------------------------

def build_tiny_radgraph(cache_dir, model_type, labels, favoured):
    """A RadGraph model folder in the package's layout: tiny BERT, vocabulary, DyGIE weights.

    The NER scorer's bias makes every candidate span an entity with the ``favoured`` label, so the
    (meaningless) predictions are deterministic and reach the conversion code.
    """
    import torch
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie
    from transformers import BertConfig, BertTokenizerFast

    torch.manual_seed(0)
    bert = cache_dir / f"tiny-bert-{model_type}"
    bert.mkdir(parents=True)
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *string.digits, *".,;:()-?",
              *(f"##{c}" for c in string.ascii_lowercase + string.digits)]
    (bert / "vocab.txt").write_text("\n".join(pieces) + "\n")
    BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    BertConfig(vocab_size=len(pieces), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=16, max_position_embeddings=128).save_pretrained(bert)

    folder = cache_dir / model_type
    vocab = Vocabulary(non_padded_namespaces=["*labels", "*tags"])
    for label in ["", *labels]:
        vocab.add_token_to_namespace(label, f"{model_type}__ner_labels")
    for relation in ["", "modify", "located_at", "suggestive_of"]:
        vocab.add_token_to_namespace(relation, f"{model_type}__relation_labels")
    vocab.save_to_files(str(folder / "vocabulary"))
    encoder = {"model_name": str(bert), "max_length": 128}
    model_options = {
        "feature_size": 4, "max_span_width": 3, "target_task": "relation",
        "feedforward_params": {"num_layers": 1, "hidden_dims": 8, "dropout": 0.0},
        "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
        "modules": {"coref": {"spans_per_word": 0.3, "max_antecedents": 5, "coref_prop": 0}, "ner": {},
                    "relation": {"spans_per_word": 0.5},
                    "events": {"trigger_spans_per_word": 0.3, "argument_spans_per_word": 0.8,
                               "loss_weights": {"trigger": 1.0, "arguments": 0.5}}},
    }
    config = {"dataset_reader": {"max_span_width": 3, "token_indexers": {"bert": encoder}},
              "model": {"type": "dygie", "embedder": {"token_embedders": {"bert": encoder}},
                        "initializer": {}, "module_initializer": {}, **model_options}}
    (folder / "config.json").write_text(json.dumps(config))

    embedder = text_field_embedders.BasicTextFieldEmbedder(
        {"bert": token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=str(bert), max_length=128)})
    model = dygie.DyGIE(vocab=Vocabulary.from_files(str(folder / "vocabulary")), embedder=embedder, **model_options)
    state = model.state_dict()
    bias = f"_ner._ner_scorers.{model_type}__ner_labels.1._module.bias"
    state[bias] = torch.full_like(state[bias], -50.0)
    state[bias][labels.index(favoured)] = 50.0
    torch.save(state, folder / "weights.th")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    cache = tmp_path_factory.mktemp("radgraph-cache")
    build_tiny_radgraph(cache, "radgraph-xl", XL_LABELS, "Observation::definitely present")
    build_tiny_radgraph(cache, "radgraph", RADGRAPH_LABELS, "OBS-U")
    return cache


def test_tiny_radgraph_xl_loads_offline_and_its_output_converts(tiny_models):
    model = load_radgraph("radgraph-xl", tiny_models, batch_size=2, device="cpu")
    reports = ["FINDINGS: Small left pneumothorax.\nIMPRESSION: Pneumothorax.", "", "Small left pneumothorax."]
    parsed = parse_reports_radgraph(reports, model, batch_size=2, progress=False)
    assert parsed[1] == {}
    assert parsed[0]["pneumothorax"].state == 1  # every span is "definitely present" in this tiny model
    assert parsed[0]["pneumothorax"].laterality == "left"


def test_tiny_original_radgraph_labels_uncertain(tiny_models):
    from cxrsynth.tasks.reports.backends import parse_texts

    settings = ParseReportsParams(backend="radgraph", radgraph=RadGraphParams(
        model_type="radgraph", model_cache_dir=str(tiny_models), batch_size=4))
    parsed = parse_texts(["Possible right effusion."], settings, device="cpu", progress=False)
    assert parsed[0]["pleural_effusion"].state == -1


def test_transformer_missing_offline_is_explained(tiny_models, tmp_path):
    folder = tmp_path / "radgraph-xl"
    folder.mkdir()
    for name in ("vocabulary", "weights.th"):
        (folder / name).symlink_to(tiny_models / "radgraph-xl" / name)
    config = json.loads((tiny_models / "radgraph-xl" / "config.json").read_text())
    reader, model = config["dataset_reader"]["token_indexers"], config["model"]["embedder"]["token_embedders"]
    for encoder in (reader["bert"], model["bert"]):
        encoder["model_name"] = "no-such-org/no-such-encoder"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RadGraphModelError, match="not available offline"):
        load_radgraph("radgraph-xl", tmp_path, device="cpu")


# --- the sentence classes of issue 15, as RadGraph-XL would annotate them: both backends must agree ---------------

def annotate(text, *spans):
    """A RadGraph-format annotation of ``text`` (tokens joined by spaces): each span is (tokens, label, relations),
    relations naming other spans by their 1-based position; start_ix is the tokens' first unused occurrence."""
    words, used, entities = text.split(" "), set(), {}
    for number, (tokens, label, relations) in enumerate(spans, start=1):
        size = len(tokens.split())
        start = next(i for i in range(len(words)) if words[i:i + size] == tokens.split() and i not in used)
        used.add(start)
        entities[str(number)] = entity(tokens, label, start, [(name, str(other)) for name, other in relations])
    return {"text": text, "entities": entities}


SENTENCE_CLASS_ANNOTATIONS = [
    # alternative explanation: suggestive_of a look-alike stated present, or uncertain
    ("alternative explanation", "nodule", 0, annotate(
        "The nodular opacity at the right base represents the nipple shadow .",
        ("nodular", DP, [("modify", 2)]), ("opacity", DP, [("located_at", 4), ("suggestive_of", 5)]),
        ("right", ANAT, [("modify", 4)]), ("base", ANAT, []), ("nipple shadow", DP, []))),
    ("hedged alternative explanation", "nodule", -1, annotate(
        "Round nodule projecting over the left lower lung most likely represents a nipple shadow .",
        ("Round", DP, [("modify", 2)]), ("nodule", DP, [("located_at", 4), ("suggestive_of", 5)]),
        ("left lower", ANAT, [("modify", 4)]), ("lung", ANAT, []), ("nipple shadow", UNC, []))),
    ("alternative explanation of a pneumothorax", "pneumothorax", 0, annotate(
        "Apparent right apical pneumothorax represents a skin fold .",
        ("Apparent", UNC, [("modify", 3)]), ("right apical", ANAT, []),
        ("pneumothorax", UNC, [("located_at", 2), ("suggestive_of", 4)]), ("skin fold", DP, []))),
    ("a denied look-alike explains nothing", "nodule", 1, annotate(
        "Pulmonary nodule in the right upper lobe , not a nipple shadow .",
        ("Pulmonary", ANAT, []), ("nodule", DP, [("located_at", 3), ("suggestive_of", 4)]),
        ("right upper lobe", ANAT, []), ("nipple shadow", DA, []))),
    # hypothetical work-up: RadGraph marks the finding uncertain
    ("hypothetical", "nodule", -1, annotate(
        "Consider chest CT to exclude a pulmonary nodule .",
        ("pulmonary", ANAT, []), ("nodule", UNC, [("located_at", 1)]))),
    # a hedge in a relative clause reaches its head
    ("relative clause", "nodule", -1, annotate(
        "Nodular opacity in the left mid lung , which could represent a nipple shadow or a nodule .",
        ("Nodular", DP, [("modify", 2)]),
        ("opacity", DP, [("located_at", 3), ("suggestive_of", 4), ("suggestive_of", 5)]),
        ("left mid lung", ANAT, []), ("nipple shadow", UNC, []), ("nodule", UNC, []))),
    # a negation list that turns positive
    ("negation list", "consolidation", 1, annotate(
        "No pneumothorax , no effusion , aortic calcifications and dense consolidation in the left base .",
        ("pneumothorax", DA, []), ("effusion", DA, []), ("aortic", ANAT, []),
        ("calcifications", DP, [("located_at", 3)]),
        ("dense", DP, [("modify", 6)]), ("consolidation", DP, [("located_at", 8)]), ("left", ANAT, [("modify", 8)]),
        ("base", ANAT, []))),
    ("negation list", "pneumothorax", 0, annotate(
        "No pneumothorax , no effusion , aortic calcifications and dense consolidation in the left base .",
        ("pneumothorax", DA, []), ("effusion", DA, []))),
    # spelling variants and synonyms go through the shared lexicon
    ("pleural air", "pneumothorax", 1, annotate(
        "Small pleural air collection at the left apex .",
        ("Small", DP, [("modify", 3)]), ("pleural", ANAT, []), ("air collection", DP, [("located_at", 2)]),
        ("left apex", ANAT, []))),
    ("masslike", "nodule", 1, annotate(
        "Masslike opacity in the right upper lobe .",
        ("Masslike", DP, [("modify", 2)]), ("opacity", DP, [("located_at", 3)]), ("right upper lobe", ANAT, []))),
    ("hydro-pneumothorax", "pleural_effusion", 1, annotate(
        "Small left hydro-pneumothorax .", ("Small", DP, [("modify", 3)]), ("left", ANAT, []),
        ("hydro-pneumothorax", DP, [("located_at", 2)]))),
]


@pytest.mark.parametrize("name, finding, expected, annotation", SENTENCE_CLASS_ANNOTATIONS,
                         ids=[f"{case[0]} ({case[1]})" for case in SENTENCE_CLASS_ANNOTATIONS])
def test_radgraph_and_rules_agree_on_the_sentence_classes(name, finding, expected, annotation):
    from cxrsynth.tasks.reports.rules import parse_report

    found = radgraph_findings(annotation).get(finding)
    assert (found.state if found else None) == expected
    ruled = parse_report(annotation["text"]).get(finding)
    assert (ruled.state if ruled else None) == expected


def test_radgraph_reads_only_the_findings_and_impression_of_mixed_case_headers():
    seen = []

    def model(texts):
        seen.extend(texts)
        return {str(i): annotate(text, ("effusion", DP, [])) for i, text in enumerate(texts)}

    report = "Indication: evaluate for pneumothorax.\nFindings: Small left effusion .\nImpression: Effusion ."
    parsed = parse_reports_radgraph([report], model, progress=False)
    assert seen == ["Small left effusion . Effusion ."]
    assert set(parsed[0]) == {"pleural_effusion"}
