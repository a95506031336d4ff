"""PNG plots of a bag evaluation (matplotlib, Agg backend): confusion, per-robot F1, latency."""

from __future__ import annotations

from pathlib import Path

import matplotlib  # here, not only when plotting: a missing matplotlib is reported before a run
import numpy as np


def _pyplot():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(path: Path, gold: list[str], predicted: list[str], counts: list[list[int]], title: str) -> Path:
    """Heat map of top-1 predictions (rows: gold label, columns: predicted label)."""
    plt = _pyplot()
    m = np.asarray(counts)
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(predicted) + 3), max(4, 0.4 * len(gold) + 2.5)))
    im = ax.imshow(m, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(predicted)), predicted, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(gold)), gold, fontsize=8)
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > m.max() / 2 else "black")
    ax.set_xlabel("predicted top-1")
    ax.set_ylabel("ground truth")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def per_robot_png(path: Path, per_robot: dict, title: str) -> Path:
    """Grouped bars of precision, recall and F1 per robot type (undefined values drawn as 0, marked)."""
    plt = _pyplot()
    names = list(per_robot)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.26
    for k, key in enumerate(("precision", "recall", "f1")):
        vals = [per_robot[n][key] for n in names]
        xs = np.arange(len(names)) + (k - 1) * width
        ax.bar(xs, [v or 0.0 for v in vals], width, label=key)
        for x, v in zip(xs, vals, strict=True):
            if v is None:
                ax.text(x, 0.02, "n/a", ha="center", fontsize=6, rotation=90)
    ax.set_xticks(range(len(names)), [f"{n}\n(n={per_robot[n]['support']})" for n in names], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncols=3, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_png(path: Path, series: dict[str, list[float]], title: str) -> Path:
    """Histogram of latencies (ms), one series per kind (model latency, end to end)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, values in series.items():
        if values:
            ax.hist(values, bins=min(30, max(5, len(values) // 2)), alpha=0.6, label=f"{name} (n={len(values)})")
    ax.set_xlabel("ms")
    ax.set_ylabel("frames")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
