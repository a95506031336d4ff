"""Tokenizers: trained byte-level BPE, GPT-2 offline, special tokens, tokenizer.json round trip."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from ember.prompting import ANSWER_TOKEN, EOS_TOKEN, PLAN_TOKEN, SPECIAL_TOKENS, format_prompt, format_target
from ember_training.testing import tiny_corpus
from ember_training.tokenizer import (
    build_tokenizer,
    eos_id,
    gpt2_tokenizer,
    load_tokenizer,
    pad_id,
    save_tokenizer,
    special_token_ids,
    train_bpe,
)

TEXT = format_prompt("Find people in the flooded street") + format_target(
    "Water is deep.", [0, 4], [(1, "Survey the area", 0), (2, "Search underwater", 4)]
)


def test_bpe_has_special_tokens_and_round_trips(tmp_path):
    tok = train_bpe(tiny_corpus(), vocab_size=400)
    assert tok.get_vocab_size() <= 400
    ids = special_token_ids(tok)
    assert sorted(ids.values()) == list(range(len(SPECIAL_TOKENS)))  # specials take the first ids
    enc = tok.encode(TEXT, add_special_tokens=False)
    for special in (ANSWER_TOKEN, PLAN_TOKEN, EOS_TOKEN):
        assert ids[special] in enc.ids  # each special is one token, not split
    assert tok.decode(enc.ids, skip_special_tokens=False) == TEXT
    assert tok.decode(tok.encode("naïve café ✓").ids) == "naïve café ✓"  # byte level: no unknowns
    path = save_tokenizer(tok, tmp_path)
    assert path.name == "tokenizer.json"
    assert load_tokenizer(tmp_path).encode(TEXT).ids == enc.ids
    assert eos_id(tok) == ids[EOS_TOKEN] and pad_id(tok) != eos_id(tok)


def test_bpe_vocab_limit():
    with pytest.raises(ValueError, match="8192"):
        train_bpe(["a b c"], vocab_size=9000)


def test_gpt2_tokenizer_offline_matches_gpt2_ids():
    tok = gpt2_tokenizer()
    assert tok.encode("Hello world").ids == [15496, 995]
    ids = special_token_ids(tok)
    assert ids[EOS_TOKEN] == 50256  # GPT-2's own end of text
    assert tok.get_vocab_size() == 50257 + len(SPECIAL_TOKENS) - 1
    assert tok.decode(tok.encode(TEXT).ids, skip_special_tokens=False) == TEXT


def test_pretrained_tokenizer_from_local_vocab_and_merges(tmp_path):
    vocab = {"a": 0, "b": 1, "ab": 2, "Ġ": 3}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    tok = build_tokenizer({"kind": "pretrained", "path": str(tmp_path)})
    assert tok.encode("ab").ids == [2]
    assert set(special_token_ids(tok)) == set(SPECIAL_TOKENS)


def test_build_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="corpus"):
        build_tokenizer({"kind": "bpe", "vocab_size": 512})
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        build_tokenizer({"kind": "sentencepiece"})
    with pytest.raises(ValueError, match="unknown key"):
        build_tokenizer({"kind": "bpe", "vocab": 5})
    plain = Tokenizer(models.BPE())
    plain.pre_tokenizer = pre_tokenizers.ByteLevel()
    plain.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="special tokens"):
        load_tokenizer(tmp_path)
