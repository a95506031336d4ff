"""Test helpers shared by every part's tests: a tiny random-weight EmberVLM bundle.

`build_tiny_bundle(dir)` trains a 512-token BPE on label/prompt text, builds the tiny
model of config/train/tiny.yaml with a fixed seed and exports it (INT8 by default) in
a few seconds. The `tiny_bundle` pytest fixture (tests/conftest.py) calls it once per
session.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from ember.labels import INCIDENT_LABELS, PLACE_LABELS, ROBOT_DISPLAY_NAMES
from ember.prompting import DEFAULT_TASK, format_prompt, format_target

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / "config" / "train" / "tiny.yaml"


def tiny_corpus() -> list[str]:
    """Deterministic text in Ember's prompt/target format, from the label lists."""
    texts = []
    for i, incident in enumerate(INCIDENT_LABELS):
        place = PLACE_LABELS[i % len(PLACE_LABELS)]
        robots = [i % 5, (i * 3 + 1) % 5]
        steps = [(1, f"Survey the {place} from above", robots[0]), (2, f"Assess the {incident} area", robots[1])]
        texts.append(format_prompt(f"Respond to the {incident} scene at the {place}."))
        texts.append(format_target(f"The image shows a {incident} {place}.", sorted(set(robots)), steps))
    texts.append(format_prompt(DEFAULT_TASK))
    texts.extend(ROBOT_DISPLAY_NAMES)
    return texts * 4


def tiny_model(seed: int = 0):
    """The tiny EmberVLM of config/train/tiny.yaml with seeded random weights (eval mode)."""
    from ember_training.model import EmberVLM, ModelConfig

    cfg = ModelConfig.from_dict(yaml.safe_load(TINY_CONFIG.read_text())["model"])
    torch.manual_seed(seed)
    return EmberVLM(cfg).eval()


def build_tiny_bundle(output: str | Path, precision: str = "int8", seed: int = 0,
                      robot_selector: str | Path | None = None) -> Path:
    """Export a tiny random-weight model to a bundle directory `output` (a few seconds on CPU),
    with a text robot selector file when one is given."""
    from ember_training.export import ExportOptions, export_bundle
    from ember_training.tokenizer import train_bpe

    yaml_cfg = yaml.safe_load(TINY_CONFIG.read_text())
    tokenizer = train_bpe(tiny_corpus(), int(yaml_cfg["tokenizer"]["vocab_size"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny graphs: one thread is much faster on a busy machine
    try:
        model = tiny_model(seed)
        options = ExportOptions(
            precision=precision,
            num_calibration=4,
            verify_inputs=2,
            verify_steps=4,
            model_version=f"tiny-random-{precision}",
            seed=seed,
            robot_selector=robot_selector,
        )
        export_bundle(model, tokenizer, output, options, source={"config_name": "tiny", "step": 0})
    finally:
        torch.set_num_threads(threads)
    return Path(output)
