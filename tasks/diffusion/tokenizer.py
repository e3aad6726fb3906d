"""Text to token ids for the text condition.

``WordTokenizer`` is the default: a word vocabulary built from the training split's prompts (or
reports), rare words mapped to ``<unk>``. ``PretrainedTokenizer`` wraps the tokenizer that ships
with a pretrained encoder in a local folder. Both encode a batch of texts (None for "no text") to
fixed-length ids, an attention mask and a per-text "has text" flag, and save into the model folder.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from cxrsynth.tasks.io import write_json

PAD, UNK = "<pad>", "<unk>"
VOCAB_FILE = "vocab.json"
PRETRAINED_FOLDER = "text_encoder"
_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """Lower-case words, numbers and single punctuation marks."""
    return _WORD.findall(text.lower())


def _has_text(text: str | None) -> bool:
    return isinstance(text, str) and bool(text.strip())


class WordTokenizer:
    kind = "word"

    def __init__(self, vocabulary: Sequence[str], max_tokens: int) -> None:
        if list(vocabulary[:2]) != [PAD, UNK]:
            raise ValueError(f"a word vocabulary starts with {PAD!r}, {UNK!r}")
        self.vocabulary = list(vocabulary)
        self.index = {word: i for i, word in enumerate(self.vocabulary)}
        self.max_tokens = max_tokens

    @classmethod
    def build(cls, texts: Iterable[str | None], min_count: int, max_tokens: int) -> "WordTokenizer":
        counts = Counter(word for text in texts if _has_text(text) for word in words(text))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *kept], max_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def encode(self, texts: Sequence[str | None]) -> dict[str, torch.Tensor]:
        ids = torch.zeros(len(texts), self.max_tokens, dtype=torch.long)
        for row, text in enumerate(texts):
            if _has_text(text):
                tokens = [self.index.get(w, 1) for w in words(text)][: self.max_tokens]
                ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        present = torch.tensor([_has_text(t) for t in texts], dtype=torch.bool)
        return {"text_ids": ids, "text_attention": ids != 0, "text_present": present}

    def save(self, folder: str | Path) -> None:
        write_json(Path(folder) / VOCAB_FILE, {"kind": self.kind, "max_tokens": self.max_tokens,
                                               "words": self.vocabulary})


def pretrained_folders(path: str | Path) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder) of a pretrained text encoder: ``path`` itself, or in a diffusers
    pipeline folder (a local copy of the one MONAI's MIMIC-CXR bundle takes its CLIP text encoder from,
    stabilityai/stable-diffusion-2-1-base) its ``text_encoder/`` and ``tokenizer/`` subfolders."""
    path = Path(path)
    if (path / PRETRAINED_FOLDER / "config.json").is_file() and (path / "tokenizer").is_dir():
        return path / PRETRAINED_FOLDER, path / "tokenizer"
    return path, path


class PretrainedTokenizer:
    kind = "pretrained"

    def __init__(self, tokenizer, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    @classmethod
    def from_folder(cls, path: str | Path, max_tokens: int) -> "PretrainedTokenizer":
        from transformers import AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"diffusion.text_encoder.path: {path} is not a folder holding a pretrained encoder")
        return cls(AutoTokenizer.from_pretrained(str(pretrained_folders(path)[1]), local_files_only=True), max_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, texts: Sequence[str | None]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer([t if _has_text(t) else "" for t in texts], padding="max_length",
                                 truncation=True, max_length=self.max_tokens, return_tensors="pt")
        present = torch.tensor([_has_text(t) for t in texts], dtype=torch.bool)
        return {"text_ids": encoded["input_ids"].long(), "text_attention": encoded["attention_mask"].bool(),
                "text_present": present}

    def save(self, folder: str | Path) -> None:
        self.tokenizer.save_pretrained(str(Path(folder) / PRETRAINED_FOLDER))
        write_json(Path(folder) / VOCAB_FILE, {"kind": self.kind, "max_tokens": self.max_tokens})


Tokenizer = WordTokenizer | PretrainedTokenizer


def build_tokenizer(texts: Iterable[str | None], kind: str, max_tokens: int, min_count: int,
                    path: str | None = None) -> Tokenizer:
    """The tokenizer the text encoder ``kind`` needs: built from ``texts`` or read from ``path``."""
    if kind == "learned":
        return WordTokenizer.build(texts, min_count, max_tokens)
    if kind == "pretrained":
        if not path:
            raise ValueError("diffusion.text_encoder.path must name a local folder when kind is 'pretrained'")
        return PretrainedTokenizer.from_folder(path, max_tokens)
    raise ValueError(f"diffusion.text_encoder.kind: unknown kind {kind!r}")


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer saved in a model folder."""
    folder = Path(folder)
    vocab_path = folder / VOCAB_FILE
    if not vocab_path.exists():
        raise ValueError(f"{vocab_path}: tokenizer vocabulary not found")
    saved = json.loads(vocab_path.read_text())
    if saved.get("kind") == WordTokenizer.kind:
        return WordTokenizer(saved["words"], saved["max_tokens"])
    if saved.get("kind") == PretrainedTokenizer.kind:
        return PretrainedTokenizer.from_folder(folder / PRETRAINED_FOLDER, saved["max_tokens"])
    raise ValueError(f"{vocab_path}: unknown tokenizer kind {saved.get('kind')!r}")
