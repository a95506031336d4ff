"""Token ids of prompts and targets, with the truncation rules training uses."""

from __future__ import annotations

from tokenizers import Tokenizer

from ember.prompting import format_prompt


def encode_prompt(tok: Tokenizer, task: str, max_tokens: int) -> list[int]:
    """ids of ember.prompting.format_prompt(task); a too long prompt keeps its first
    max_tokens - 1 ids and its last id (the <reasoning> token that starts the answer)."""
    ids = tok.encode(format_prompt(task), add_special_tokens=False).ids
    if len(ids) > max_tokens:
        ids = ids[: max_tokens - 1] + ids[-1:]
    return ids


def encode_target(tok: Tokenizer, target: str, max_tokens: int) -> list[int]:
    """ids of an LM target (formatted text ending in EOS), cut to max_tokens."""
    if not target:
        return []
    return tok.encode(target, add_special_tokens=False).ids[:max_tokens]
