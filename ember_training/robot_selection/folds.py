"""Grouped, label-stratified k-fold assignment of robot-selection tasks (one definition for all).

Tasks whose normalised text is identical form one group and always land in the same fold
(the dataset repeats a few tasks verbatim, and curly/straight quotes differ between files).
Groups are shuffled with a fixed seed and dealt round-robin within each label-set stratum,
so every fold sees about the same label distribution. The assignment depends only on the
texts, the labels and the seed: it is deterministic across runs, machines and Python hashing.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence

DEFAULT_K = 5
DEFAULT_SEED = 0

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})
_TASK_PREFIX = re.compile(r"^\s*task\s*:\s*", re.IGNORECASE)


def normalize_task(text: str) -> str:
    """Group key of a task text: NFKC, straight quotes, no 'Task:' prefix, lower case,
    apostrophes dropped ("building's" == "buildings"), other punctuation as spaces."""
    s = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    s = _TASK_PREFIX.sub("", s).lower().replace("'", "")
    s = re.sub(r"[^a-z0-9]+", " ", s)
    return " ".join(s.split())


def _rank(seed: int, key: str) -> str:
    """Seeded, platform-independent shuffle key of a group."""
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def grouped_folds(
    texts: Sequence[str],
    label_sets: Sequence[Sequence[int]] | None = None,
    k: int = DEFAULT_K,
    seed: int = DEFAULT_SEED,
) -> list[int]:
    """Fold id (0..k-1) of every task; identical normalised texts share a fold.

    `label_sets` (one set of robot indices per task) stratifies the folds by label set; a
    group's stratum is the label set of its first task.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if label_sets is not None and len(label_sets) != len(texts):
        raise ValueError("texts and label_sets differ in length")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        groups[normalize_task(t)].append(i)
    if len(groups) < k:
        raise ValueError(f"{len(groups)} distinct tasks cannot fill {k} folds")
    strata: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for key, members in groups.items():
        stratum = tuple(sorted(set(label_sets[members[0]]))) if label_sets is not None else ()
        strata[stratum].append(key)
    fold_of = [0] * len(texts)
    sizes = [0] * k
    turn = 0
    # larger strata first, then by label set; inside a stratum the seeded order; the deal
    # continues round-robin across strata and always skips to the emptiest fold on ties
    for stratum in sorted(strata, key=lambda s: (-len(strata[s]), s)):
        for key in sorted(strata[stratum], key=lambda g: _rank(seed, g)):
            order = sorted(range(k), key=lambda f: (sizes[f], (f - turn) % k))
            f = order[0]
            for i in groups[key]:
                fold_of[i] = f
            sizes[f] += len(groups[key])
            turn = (f + 1) % k
    return fold_of


def split(fold_of: Sequence[int], fold: int) -> tuple[list[int], list[int]]:
    """(train indices, test indices) of one fold."""
    train = [i for i, f in enumerate(fold_of) if f != fold]
    test = [i for i, f in enumerate(fold_of) if f == fold]
    return train, test


def inner_folds(
    texts: Sequence[str], label_sets: Sequence[Sequence[int]] | None, indices: Sequence[int], k: int, seed: int
) -> list[int]:
    """Grouped folds over a subset (e.g. a training split, for threshold calibration by inner CV);
    returns one fold id per entry of `indices`."""
    return grouped_folds([texts[i] for i in indices], None if label_sets is None else [label_sets[i] for i in indices], k, seed + 1)
