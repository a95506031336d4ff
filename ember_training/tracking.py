"""Per-stage records: metrics JSONL, loss-curve PNG, CodeCarbon emissions, optional W&B."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("ember_training.train")


class MetricsLog:
    """Appends one JSON object per optimizer step to metrics.jsonl (rank 0)."""

    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = path
        if path.exists():  # drop records past the step we resume from (they will be redone)
            keep = [r for r in read_metrics(path) if r.get("step", 0) <= resume_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        self._fh = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a line cut short by a kill mid-write is skipped."""
    rows = []
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(ln) if ln.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def plot_losses(metrics: Path, out: Path, title: str) -> Path:
    """Loss and its components against the step, as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    skip = {"step", "lr", "grad_norm", "time", "samples", "epoch", "stage", "logit_scale", "confidence_target", "distilled_tokens"}
    keys = [k for k in rows[0] if k not in skip] if rows else []
    steps = [r["step"] for r in rows]
    for k in keys:
        ax.plot(steps, [r.get(k) for r in rows], label=k, linewidth=2.0 if k == "loss" else 1.0)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if keys:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


class Emissions:
    """CodeCarbon's OfflineEmissionsTracker writing <stage dir>/emissions.csv (no network)."""

    def __init__(self, out_dir: Path, project: str, country_iso_code: str, enabled: bool) -> None:
        self.tracker = None
        self.kg: float | None = None
        if not enabled:
            return
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.output_methods.base_output import OutputMethod

        self.tracker = OfflineEmissionsTracker(
            country_iso_code=country_iso_code, output_dir=str(out_dir), output_file="emissions.csv",
            project_name=project, log_level="error", output_methods=[OutputMethod.CSV],
        )

    def __enter__(self) -> Emissions:
        if self.tracker is not None:
            self.tracker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kg = self.tracker.stop() if self.tracker is not None else None


class WandbRun:
    """Weights & Biases, only when the package is installed and tracking.wandb_project is set."""

    def __init__(self, project: str | None, name: str, config: dict) -> None:
        self.run = None
        if not project:
            return
        try:
            import wandb
        except ImportError:
            log.info("tracking.wandb_project is set but wandb is not installed: not logging to W&B")
            return
        self.run = wandb.init(project=project, name=name, config=config, mode=os.environ.get("WANDB_MODE"))

    def log(self, record: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(record, step=record.get("step"))

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
