"""Checkpoints are shared between people: loading one must never run code it carries.

Each test writes a real checkpoint (checkpoint_dict of the tiny model + torch.save) with a pickled
object whose __reduce__ would create a marker file, and checks every loader refuses it with one
CheckpointError line and the marker never appears.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ember_training.checkpoint_format import (
    CheckpointError,
    atomic_torch_save,
    checkpoint_dict,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from ember_training.testing import tiny_corpus, tiny_model
from ember_training.tokenizer import train_bpe


class Payload:
    """Unpickling this runs `open(marker, "w")`: what a planted final.pt would do."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def refused_without_running(load, path, marker) -> str:
    """Call `load(path)`; the planted code must not have run and a one-line refusal must come back."""
    try:
        load(path)
        error = None
    except CheckpointError as exc:
        error = str(exc)
    assert not marker.exists(), f"loading {path.name} ran the code it carries ({marker.name} was created)"
    assert error is not None and error.startswith("refused") and "\n" not in error, error
    return error


@pytest.fixture(scope="module")
def model_and_tok():
    return tiny_model(seed=3), train_bpe(tiny_corpus(), 300)


def _planted(path, model_and_tok, extra):
    """A real checkpoint with `extra` keys added as an attacker would: straight through torch.save
    (our writer refuses them, see the last test)."""
    model, tok = model_and_tok
    return atomic_torch_save({**checkpoint_dict(model, {"model": model.config.to_dict()}, tok, 7), **extra}, path)


@pytest.mark.parametrize("where", ["top", "rng"])
def test_a_checkpoint_that_runs_code_is_refused(tmp_path, model_and_tok, where):
    """Both as an extra top-level key and hidden in the RNG state a resume restores."""
    marker = tmp_path / "pwned"
    extra = {"metrics": Payload(marker)} if where == "top" else {"rng": [{"python": Payload(marker)}]}
    path = _planted(tmp_path / "final.pt", model_and_tok, extra)
    for load in (load_checkpoint, model_from_checkpoint):
        assert "io.open" in refused_without_running(load, path, marker)


def test_ember_export_refuses_a_planted_checkpoint(tmp_path, model_and_tok, capsys):
    from ember_training.export.cli import main

    marker = tmp_path / "pwned"
    path = _planted(tmp_path / "final.pt", model_and_tok, {"robot_thresholds": Payload(marker)})
    code = main(["--checkpoint", str(path), "--output", str(tmp_path / "bundle")])
    assert not marker.exists(), "ember-export ran the code the checkpoint carries"
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("ember-export: error: refused") and "\n" not in err
    assert not (tmp_path / "bundle").exists()


def test_numpy_object_arrays_are_refused(tmp_path, model_and_tok):
    """The allow-list that reads older checkpoints' numpy RNG state must not let an object array in."""
    marker = tmp_path / "pwned"
    legacy = ("MT19937", np.array([Payload(marker)], dtype=object), 0, 0, 0.0)
    path = _planted(tmp_path / "step.pt", model_and_tok, {"rng": [{"torch": torch.get_rng_state(), "numpy": legacy}]})
    refused_without_running(load_checkpoint, path, marker)


def test_non_checkpoint_pickles_are_refused(tmp_path):
    """Not only our dict: any pickle at the top level is read by the safe unpickler."""
    marker = tmp_path / "pwned"
    torch.save(Payload(marker), tmp_path / "x.pt")
    refused_without_running(load_checkpoint, tmp_path / "x.pt", marker)


def test_writing_what_a_safe_load_cannot_read_fails_at_once(tmp_path, model_and_tok):
    """A numpy scalar (np.float64 is a float subclass) or an object would make the file unloadable:
    the writer names the key instead of leaving a checkpoint nobody can read."""
    model, tok = model_and_tok
    for bad, name in (({"metrics": {"acc": np.float64(0.5)}}, "metrics.acc"),
                      ({"rng": [{"numpy": np.zeros(3, np.uint32)}]}, "rng[0].numpy"),
                      ({"where": tmp_path}, "where")):
        with pytest.raises(TypeError, match=name.replace("[", r"\[").replace(".", r"\.")):
            save_checkpoint(tmp_path / "c.pt", model, {}, tok, 1, extra=bad)
    assert not (tmp_path / "c.pt").exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_plain_checkpoint_loads_with_torchs_bare_safe_unpickler(tmp_path, model_and_tok):
    model, tok = model_and_tok
    extra = {"metrics": {"acc": 0.5}, "robot_thresholds": [0.5] * 5, "stage": "x", "scaler": None,
             "optimizer": {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [{"betas": (0.9, 0.95)}]}}
    path = save_checkpoint(tmp_path / "c.pt", model, {"model": model.config.to_dict()}, tok, 3, extra=extra)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    raw = torch.load(path, weights_only=True)
    assert raw["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95) and load_checkpoint(path)["step"] == 3
