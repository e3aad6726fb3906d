import pytest

from cxrsynth.tasks.diffusion.tokenizer import PretrainedTokenizer, WordTokenizer, build_tokenizer, load_tokenizer, words
from tests.diffusion_data import save_tiny_bert


def test_words_split_punctuation_and_lower_case():
    assert words("Small LEFT pneumothorax, 2 cm.") == ["small", "left", "pneumothorax", ",", "2", "cm", "."]


def test_word_vocabulary_keeps_frequent_words_in_a_fixed_order():
    tokenizer = WordTokenizer.build(["left nodule.", "right nodule.", "left effusion.", None], min_count=2, max_tokens=6)
    assert tokenizer.vocabulary == ["<pad>", "<unk>", ".", "left", "nodule"]
    encoded = tokenizer.encode(["left effusion nodule .", None, ""])
    assert encoded["text_ids"][0].tolist() == [3, 1, 4, 2, 0, 0]
    assert encoded["text_attention"][0].tolist() == [True] * 4 + [False] * 2
    assert encoded["text_present"].tolist() == [True, False, False]
    assert encoded["text_ids"][1].sum() == 0


def test_long_texts_are_truncated():
    tokenizer = WordTokenizer.build(["a b c d e f g"], min_count=1, max_tokens=4)
    assert tokenizer.encode(["a b c d e f g"])["text_ids"].shape == (1, 4)


def test_word_tokenizer_round_trips_through_a_model_folder(tmp_path):
    tokenizer = build_tokenizer(["mild left nodule."] * 2, "learned", max_tokens=8, min_count=1)
    tokenizer.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.vocabulary == tokenizer.vocabulary and again.max_tokens == 8


def test_pretrained_tokenizer_from_a_local_folder(tmp_path):
    folder = save_tiny_bert(tmp_path / "bert")
    tokenizer = build_tokenizer([], "pretrained", max_tokens=10, min_count=1, path=str(folder))
    encoded = tokenizer.encode(["mild left nodule.", None])
    assert encoded["text_ids"].shape == (2, 10) and encoded["text_present"].tolist() == [True, False]
    assert encoded["text_attention"][0].sum() == 6  # [CLS] mild left nodule . [SEP]
    tokenizer.save(tmp_path / "model")
    assert isinstance(load_tokenizer(tmp_path / "model"), PretrainedTokenizer)


def test_pretrained_tokenizer_needs_a_path():
    with pytest.raises(ValueError, match="text_encoder.path must name a local folder"):
        build_tokenizer([], "pretrained", 8, 1, None)
    with pytest.raises(ValueError, match="is not a folder"):
        build_tokenizer([], "pretrained", 8, 1, "/nonexistent/bert")
