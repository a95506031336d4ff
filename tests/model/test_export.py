"""ember-export: ONNX FP32 parity with PyTorch, INT8 agreement, graph structure, bundle.json."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from ember.engine.bundle import sha256_file
from ember.engine.preprocess import preprocess
from ember.prompting import format_prompt
from ember_training.checkpoint_format import save_checkpoint
from ember_training.export.calibration import generated_images
from ember_training.export.cli import main as export_main
from ember_training.export.verify import OnnxPair
from ember_training.testing import tiny_corpus, tiny_model
from ember_training.tokenizer import train_bpe


@pytest.fixture(scope="module")
def tiny():
    """The tiny_bundle fixture's model and tokenizer (same seed, same corpus)."""
    return tiny_model(seed=0), train_bpe(tiny_corpus(), 512)


@pytest.fixture(scope="module")
def fp32_bundle(tiny, tmp_path_factory):
    """An FP32 bundle exported through the CLI from a checkpoint of the tiny model."""
    model, tok = tiny
    tmp = tmp_path_factory.mktemp("fp32")
    ckpt = save_checkpoint(tmp / "ckpt.pt", model, {"model": model.config.to_dict(), "name": "tiny"}, tok, 7)
    torch.set_num_threads(1)
    assert export_main(["--checkpoint", str(ckpt), "--output", str(tmp / "bundle"), "--precision", "fp32"]) == 0
    return tmp / "bundle"


def _pair(bundle) -> OnnxPair:
    meta = json.loads((bundle / "bundle.json").read_text())
    return OnnxPair(str(bundle / "vision.onnx"), str(bundle / "decoder.onnx"), meta["n_layers"], meta["n_heads"], meta["head_dim"])


def _inputs(model, tok, n=3, seed=11):
    cfg = model.config
    images = generated_images(n, seed=seed, size=96)
    tasks = ["Check the bridge for damage.", "Is anyone trapped in the car?", "Map the burned forest road."]
    return [
        (preprocess(im, cfg.image_size, cfg.image_mean, cfg.image_std), tok.encode(format_prompt(t)).ids)
        for im, t in zip(images, tasks[:n], strict=True)
    ]


def test_fp32_onnx_matches_pytorch_full_forward(tiny, fp32_bundle):
    """Teacher-forced ONNX decode steps (KV cache) against PyTorch forwards without a cache."""
    model, tok = tiny
    pair = _pair(fp32_bundle)
    worst = 0.0
    for pixels, ids in _inputs(model, tok):
        trace = pair.trace(pixels, ids, steps=4)
        seq = torch.tensor([ids + trace.tokens[:-1]])
        with torch.no_grad():
            out = model(torch.from_numpy(pixels), seq, None, torch.tensor([len(ids)]))
        ref = out.lm_logits[0, len(ids) - 1 :].numpy()
        worst = max(worst, float(np.abs(np.stack(trace.logits) - ref).max()))
        assert np.abs(trace.heads["robot_logits"] - out.robot_logits.numpy()).max() <= 1e-4
        assert np.abs(trace.heads["incident_logits"] - out.incident_logits.numpy()).max() <= 1e-4
        assert np.abs(trace.heads["place_logits"] - out.place_logits.numpy()).max() <= 1e-4
    assert worst <= 1e-4, worst


def test_int8_agrees_with_fp32(tiny, fp32_bundle, tiny_bundle):
    model, tok = tiny
    fp32, int8 = _pair(fp32_bundle), _pair(tiny_bundle)
    agree, drift = [], 0.0
    for pixels, ids in _inputs(model, tok, seed=23):
        ref = fp32.trace(pixels, ids, steps=6)
        q = int8.trace(pixels, ids, steps=6, forced=ref.tokens[:-1])
        agree += [a == b for a, b in zip(ref.tokens, q.tokens, strict=True)]
        sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
        drift = max(drift, float(np.abs(sig(ref.heads["robot_logits"]) - sig(q.heads["robot_logits"])).max()))
    assert np.mean(agree) >= 0.9
    assert drift <= 0.05


def test_bundle_json_records_checks_and_hashes(fp32_bundle, tiny_bundle):
    for bundle, precision in ((fp32_bundle, "fp32"), (tiny_bundle, "int8")):
        meta = json.loads((bundle / "bundle.json").read_text())
        assert meta["precision"] == precision and meta["format_version"] == 1
        for name, entry in meta["files"].items():
            assert sha256_file(bundle / name) == entry["sha256"]
        checks = meta["export_checks"]
        assert checks["fp32_max_abs_logit_diff"] <= 1e-4
        if precision == "int8":
            assert 0.0 <= checks["int8_top1_agreement"] <= 1.0
            assert checks["int8_robot_score_max_drift"] >= 0.0
        assert len(meta["robot_thresholds"]) == 5 and len(meta["incident_labels"]) == 43
    assert json.loads((fp32_bundle / "bundle.json").read_text())["source"]["step"] == 7


def test_int8_graphs_per_channel_vision_and_one_embedding_table(tiny_bundle, fp32_bundle):
    vision = onnx.load(str(tiny_bundle / "vision.onnx"))
    ops = [n.op_type for n in vision.graph.node]
    assert "BatchNormalization" not in ops and "QLinearConv" in ops
    float_convs = [n for n in vision.graph.node if n.op_type == "Conv"]
    assert float_convs and all(  # only the depthwise ones stay float (VisionRecipe.keep_float)
        any(a.name == "group" and a.i > 1 for a in n.attribute) for n in float_convs
    ), [n.name for n in float_convs]
    inits = {i.name: i for i in vision.graph.initializer}
    for conv in (n for n in vision.graph.node if n.op_type == "QLinearConv"):
        w_scale = inits[conv.input[4]]  # per output channel
        w_shape = inits[conv.input[3]].dims
        assert list(w_scale.dims) == [w_shape[0]], conv.name
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(fp32_bundle / "vision.onnx")).graph.node}

    decoder = onnx.load(str(tiny_bundle / "decoder.onnx"))
    meta = json.loads((tiny_bundle / "bundle.json").read_text())
    tables = [i for i in decoder.graph.initializer if meta["vocab_size"] in i.dims]
    assert len(tables) == 1 and tables[0].data_type == onnx.TensorProto.UINT8  # tied embedding stored once
    users = [n.op_type for n in decoder.graph.node if tables[0].name in n.input]
    assert len(users) == 2 and "Gather" in users and any("MatMul" in u for u in users)  # lookup + LM head
    attention = [n for n in decoder.graph.node if n.op_type == "GroupQueryAttention"]
    assert len(attention) == meta["n_layers"]
    fp32_size = (fp32_bundle / "decoder.onnx").stat().st_size
    assert (tiny_bundle / "decoder.onnx").stat().st_size < 0.5 * fp32_size


def test_cli_errors(tmp_path, capsys):
    assert export_main(["--checkpoint", str(tmp_path / "none.pt"), "--output", str(tmp_path / "b")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    model = tiny_model()
    ckpt = save_checkpoint(tmp_path / "c.pt", model, {"model": model.config.to_dict()}, train_bpe(tiny_corpus(), 300), 1)
    keep = tmp_path / "not_a_bundle"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert export_main(["--checkpoint", str(ckpt), "--output", str(keep), "--precision", "fp32"]) == 2
    assert "refusing" in capsys.readouterr().err and (keep / "notes.txt").exists()



def test_engine_stops_at_eos(tiny, tmp_path):
    """A real bundle whose LM always predicts EOS: the engine stops at once and keeps EOS out of the text."""
    from ember.engine import EmberEngine
    from ember_training.export import ExportOptions, export_bundle
    from ember_training.tokenizer import eos_id

    _, tok = tiny
    model = tiny_model(seed=0)
    with torch.no_grad():
        lm = model.decoder.lm
        lm.transformer.ln_f.weight.zero_()
        lm.transformer.ln_f.bias.zero_()
        lm.transformer.ln_f.bias[0] = 1.0  # every final hidden state is e0
        lm.transformer.wte.weight[eos_id(tok), 0] = 50.0  # so EOS wins every step
    export_bundle(model, tok, tmp_path / "b", ExportOptions(precision="fp32", num_calibration=1, verify_inputs=1))
    engine = EmberEngine(tmp_path / "b")
    img = np.zeros((64, 64, 3), np.uint8)
    a = engine.analyze(img, "Any task", max_new_tokens=10)
    assert a.num_generated_tokens == 0 and a.text == ""
    forced = engine.analyze(img, "Any task", max_new_tokens=4, stop_at_eos=False)
    assert forced.num_generated_tokens == 4


def test_cli_refuses_a_checkpoint_of_another_model_without_a_traceback(tmp_path, capsys):
    """Missing weights, or weights of another architecture: exit 2 with one clear line, no bundle."""
    from ember_training.checkpoint_format import atomic_torch_save, checkpoint_dict

    model = tiny_model()
    ckpt = checkpoint_dict(model, {"model": model.config.to_dict()}, train_bpe(tiny_corpus(), 300), 1)
    missing = {**ckpt, "model": {k: v for k, v in ckpt["model"].items() if k != "logit_scale"}}
    other_cfg = {**ckpt["config"], "model": {**ckpt["config"]["model"], "adapter_dim": 2 * model.config.adapter_dim}}
    other = {**ckpt, "config": other_cfg}
    for name, bad in (("missing.pt", missing), ("other.pt", other)):
        path = atomic_torch_save(bad, tmp_path / name)
        out = tmp_path / f"bundle_{name}"
        assert export_main(["--checkpoint", str(path), "--output", str(out), "--precision", "fp32"]) == 2, name
        err = capsys.readouterr().err
        assert "ember-export: error:" in err and str(path) in err, err
        assert not out.exists()


def test_cli_output_below_a_file_and_bad_counts_are_usage_errors(tmp_path, capsys):
    model = tiny_model()
    ckpt = save_checkpoint(tmp_path / "c.pt", model, {"model": model.config.to_dict()}, train_bpe(tiny_corpus(), 300), 1)
    (tmp_path / "a_file").write_text("not a directory")
    rc = export_main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "a_file" / "bundle"), "--precision", "fp32"])
    assert rc == 2
    assert "ember-export: error:" in capsys.readouterr().err
    for flag in ("--num-calibration", "--verify-inputs"):
        with pytest.raises(SystemExit) as exc:
            export_main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "b"), flag, "0"])
        assert exc.value.code == 2
        assert f"{flag}: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_killed_export_keeps_the_old_bundle_and_leaves_no_staging_behind(tiny_bundle, tmp_path):
    """An export killed mid-way (OOM killer, kill -9, a cancelled CI job) leaves the previous bundle
    loadable at --output, and the next export removes the dead one's staging directory."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from ember.engine.bundle import load_bundle

    model = tiny_model()
    ckpt = save_checkpoint(tmp_path / "c.pt", model, {"model": model.config.to_dict()}, train_bpe(tiny_corpus(), 300), 1)
    out = tmp_path / "models" / "bundle"
    shutil.copytree(tiny_bundle, out)
    args = ["--checkpoint", str(ckpt), "--output", str(out), "--precision", "fp32", "--verify-inputs", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "ember_training.export.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.parent.glob(".export-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for the export's staging directory to appear
        assert list(out.parent.glob(".export-*")), "the export never started staging"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert load_bundle(out).meta["model_version"] == "tiny-random-int8"  # the old bundle, whole
    assert export_main(args) == 0
    assert load_bundle(out).meta["precision"] == "fp32"
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]


def test_calibration_images_are_spread_over_a_recording_not_its_first_frames(tmp_path):
    """A directory of 64 recorded frames (named in time order, the scene changing over time):
    8 calibration images come from all of it, so INT8 ranges cover the whole recording; an
    unreadable frame is replaced by another one."""
    import cv2
    import numpy as np

    from ember_training.export.calibration import load_images

    for i in range(64):
        cv2.imwrite(str(tmp_path / f"frame_{i:04d}.png"), np.full((16, 16, 3), i * 4, np.uint8))
    def levels() -> list[int]:
        return sorted(int(im[0, 0, 0]) // 4 for im in load_images(tmp_path, limit=8))

    assert levels() == [0, 9, 18, 27, 36, 45, 54, 63]  # before: 0..7, the first eight frames
    (tmp_path / "frame_0027.png").write_bytes(b"not a png")  # one of the evenly spaced picks
    got = levels()
    assert len(got) == 8 and 27 not in got and got[0] == 0 and got[-1] == 63, got
