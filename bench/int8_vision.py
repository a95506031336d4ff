"""INT8 vision-encoder recipes against FP32 and against the export's current recipe, same run.

    python bench/int8_vision.py [--checkpoint CKPT] [--images DIR] [--recipes a,b,...] [--repeats 15]

Exports vision.onnx (FP32) of a trained checkpoint (default: the demo training's
build/train/demo/robot_selection/final.pt), quantizes it with each recipe (VisionRecipe of
ember_training/export/quantize.py; the same call and ORT offline optimization as ember-export)
on `--num-calibration` photos of `--images` spread over the folder, and measures on images not
calibrated on (the folder's other photos plus generated scenes of another seed):

* visual-embedding cosine INT8 vs FP32 per image (mean, min; photos alone too),
* top incident agreement: the FP32 decoder's incident head on FP32 vs INT8 visual embeddings
  (prefill with the default camera task), so only the vision quantization differs,
* vision latency per image, 1 thread, engine session options: recipes timed in interleaved
  rounds, median, as a ratio to the `current` recipe (and to FP32),
* vision.onnx size.

Prints a table of ratios against `current` and writes build/bench/int8_vision.json and .png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "build" / "bench"
DEFAULT_CKPT = ROOT / "build" / "train" / "demo" / "robot_selection" / "final.pt"
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "incidents" / "images"


def recipes() -> dict[str, object]:
    """Name -> VisionRecipe. `current` is the recipe ember-export used before this bench (MinMax,
    everything quantized): the baseline of every ratio; `default` is ember-export's default now."""
    from ember_training.export.quantize import VisionRecipe

    current = VisionRecipe(
        per_channel=True, activation_type="QUInt8", weight_type="QInt8", calibrate_method="MinMax",
        activation_symmetric=False, weight_symmetric=True, keep_float=(), pre_process="fast",
        calibration_stride=1024,  # one calibration pass, as before
        gelu="float",  # dequantize -> GELU -> quantize, as before
    )
    default = VisionRecipe()
    pct = replace(current, calibrate_method="Percentile")
    return {
        "current": current,
        "default": default,
        "per_tensor": replace(current, per_channel=False),
        "act_sym_int8": replace(current, activation_type="QInt8", activation_symmetric=True),
        "entropy": replace(current, calibrate_method="Entropy"),
        "mean_of_image_ranges": replace(current, extra_options=(("CalibMovingAverage", True),)),
        "percentile_99.999_sym": replace(pct, percentile=99.999, symmetric_ranges=True),
        "percentile_99.99": pct,
        "percentile_99.9": replace(pct, percentile=99.9),
        "float_first_conv": replace(current, keep_float=("first_conv",)),
        "float_head": replace(current, keep_float=("head",)),
        "float_first_and_head": replace(current, keep_float=("first_conv", "head")),
        "float_depthwise": replace(current, keep_float=("depthwise",)),
        "float_depthwise_mean_ranges": replace(current, keep_float=("depthwise",),
                                               extra_options=(("CalibMovingAverage", True),)),
        "default_p99.999": replace(default, percentile=99.999),
        **{f"default_dw_quantized_first{k}": replace(default, quantized_depthwise_first=k) for k in (1, 2, 3, 4, 6)},
        "default_one_pass": replace(default, calibration_stride=1024),
        "default_gelu_float": replace(default, gelu="float"),  # the default before GELU ran quantized
        "default_8bit_weights": replace(default, reduce_range=False),  # the default before 7-bit weights
        "float_bias": replace(current, extra_options=(("QuantizeBias", False),)),
        "pre_full": replace(current, pre_process="full"),
        "pre_none": replace(current, pre_process="none"),
        "conv_only": replace(current, op_types=("Conv",)),
    }


@dataclass
class Images:
    calibration: np.ndarray  # [N, 3, S, S] preprocessed
    held_out: np.ndarray
    held_out_photos: int  # the first held_out_photos rows are photos, the rest generated scenes


def load_images(folder: Path, n_calib: int, n_photos_held: int, n_generated: int, size: int, mean, std,
                calib_generated: int = 0) -> Images:
    """Calibration: `n_calib` photos of `folder` (+ `calib_generated` generated scenes, seed 0); held
    out: `n_photos_held` other photos + `n_generated` generated scenes of seed 1."""
    from ember_training.export.calibration import calibration_batch, generated_images, load_folder

    f = load_folder(folder, n_calib, n_photos_held, size)
    held = f.held_out + generated_images(n_generated, seed=1)
    return Images(
        calibration_batch(f.calibration + generated_images(calib_generated, seed=0), size, mean, std),
        calibration_batch(held, size, mean, std),
        len(f.held_out),
    )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


class IncidentHead:
    """The FP32 decoder's incident head on given visual embeddings (prefill with the default task)."""

    def __init__(self, model, tokenizer, decoder_path: Path) -> None:
        import onnxruntime as ort

        from ember.engine.decoder import KVCacheDecoder
        from ember.engine.engine import session_options
        from ember.prompting import DEFAULT_TASK, format_prompt

        cfg = model.config
        sess = ort.InferenceSession(str(decoder_path), session_options(1), providers=["CPUExecutionProvider"])
        self.kv = KVCacheDecoder(sess, model.decoder.lm.config.n_layer, cfg.n_heads, cfg.d_model // cfg.n_heads,
                                 cfg.d_model)
        self.prompt = tokenizer.encode(format_prompt(DEFAULT_TASK), add_special_tokens=False).ids

    def top1(self, visual: np.ndarray) -> list[int]:
        out = []
        for v in visual:
            heads = self.kv.start(self.prompt, v[None], v.shape[0] + len(self.prompt) + 1)
            out.append(int(np.argmax(heads["incident_logits"])))
            self.kv.release()
        return out


def _session(path: Path):
    import onnxruntime as ort

    from ember.engine.engine import session_options

    return ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])


def _embed(sess, pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([sess.run(None, {"pixel_values": pixels[i : i + 1]})[0] for i in range(len(pixels))])


def time_interleaved(sessions: dict[str, object], pixels: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds of one vision run per session, sessions taking turns each round (a busy
    machine then slows every recipe alike)."""
    feed = {"pixel_values": pixels}
    for s in sessions.values():
        s.run(None, feed)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(1, 2, figsize=(12, 0.35 * len(names) + 1.5), sharey=True)
    y = np.arange(len(names))
    ax[0].barh(y - 0.2, [results[n]["cosine_mean"] for n in names], 0.4, label="mean")
    ax[0].barh(y + 0.2, [results[n]["cosine_min"] for n in names], 0.4, label="min")
    ax[0].set_xlim(min(0.5, min(results[n]["cosine_min"] for n in names)), 1.0)
    ax[0].set_xlabel("visual-embedding cosine INT8 vs FP32 (held-out)")
    ax[0].legend()
    ax[1].barh(y, [results[n]["latency_ratio"] for n in names], 0.6, color="tab:gray")
    ax[1].axvline(1.0, color="k", lw=0.8)
    ax[1].set_xlabel("vision latency / current recipe (1 thread)")
    ax[0].set_yticks(y, names)
    ax[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="photos: calibration + held out")
    p.add_argument("--num-calibration", type=int, default=6)
    p.add_argument("--calibration-generated", type=int, default=0, help="generated scenes added to calibration")
    p.add_argument("--held-out-photos", type=int, default=6)
    p.add_argument("--held-out-generated", type=int, default=16)
    p.add_argument("--recipes", default="", help="comma-separated names (default: all); current is always run")
    p.add_argument("--repeats", type=int, default=15, help="timing rounds")
    p.add_argument("--out", type=Path, default=OUT_DIR / "int8_vision")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from ember_training.checkpoint_format import model_from_checkpoint, tokenizer_of
    from ember_training.export.onnx_export import export_decoder, export_vision
    from ember_training.export.quantize import optimize_for_ort, quantize_vision

    all_recipes = recipes()
    chosen = ["current"] + [r for r in args.recipes.split(",") if r and r != "current"] if args.recipes else list(all_recipes)
    unknown = [r for r in chosen if r not in all_recipes]
    if unknown:
        print(f"int8_vision: unknown recipe(s) {unknown}; known: {', '.join(all_recipes)}", file=sys.stderr)
        return 2
    model, ckpt = model_from_checkpoint(args.checkpoint)
    cfg = model.config
    imgs = load_images(args.images, args.num_calibration, args.held_out_photos, args.held_out_generated,
                       cfg.image_size, cfg.image_mean, cfg.image_std, args.calibration_generated)
    n_photo = imgs.held_out_photos
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="int8_vision-") as tmp:
        work = Path(tmp)
        export_vision(model, work / "vision_raw.onnx")
        export_decoder(model, work / "decoder_raw.onnx")
        optimize_for_ort(work / "vision_raw.onnx", work / "fp32.onnx")
        optimize_for_ort(work / "decoder_raw.onnx", work / "decoder_fp32.onnx")
        head = IncidentHead(model, tokenizer_of(ckpt), work / "decoder_fp32.onnx")
        sessions = {"fp32": _session(work / "fp32.onnx")}
        ref = _embed(sessions["fp32"], imgs.held_out)
        ref_top = head.top1(ref)
        for name in chosen:
            t0 = time.perf_counter()
            quantize_vision(work / "vision_raw.onnx", work / f"{name}_q.onnx", imgs.calibration, all_recipes[name])
            optimize_for_ort(work / f"{name}_q.onnx", work / f"{name}.onnx")
            seconds = time.perf_counter() - t0
            sessions[name] = _session(work / f"{name}.onnx")
            emb = _embed(sessions[name], imgs.held_out)
            cos = _cosines(ref, emb)
            top = head.top1(emb)
            results[name] = {
                "recipe": asdict(all_recipes[name]),
                "cosine_mean": float(cos.mean()),
                "cosine_min": float(cos.min()),
                "cosine_photos_mean": float(cos[:n_photo].mean()) if n_photo else None,
                "cosine_photos_min": float(cos[:n_photo].min()) if n_photo else None,
                "incident_top1_agreement": float(np.mean([a == b for a, b in zip(ref_top, top, strict=True)])),
                "size_bytes": (work / f"{name}.onnx").stat().st_size,
                "quantize_seconds": seconds,
            }
            print(f"  {name}: cosine mean {cos.mean():.4f} min {cos.min():.4f} ({seconds:.1f} s)", flush=True)
        lat = time_interleaved(sessions, imgs.held_out[:1], args.repeats)
        fp32_size = (work / "fp32.onnx").stat().st_size
    base = results["current"]
    for name, r in results.items():
        r["latency_ms"] = lat[name] * 1e3
        r["latency_ratio"] = lat[name] / lat["current"]
        r["latency_ratio_vs_fp32"] = lat[name] / lat["fp32"]
        r["size_ratio"] = r["size_bytes"] / base["size_bytes"]

    print(f"\nvision INT8 recipes, {cfg.vision_model} {cfg.image_size}px, {len(imgs.calibration)} calibration photos, "
          f"{len(imgs.held_out)} held-out images ({n_photo} photos); FP32 {lat['fp32'] * 1e3:.1f} ms, "
          f"{fp32_size / 2**20:.2f} MiB")
    print(f"{'recipe':22} {'cos mean':>8} {'cos min':>8} {'photo min':>9} {'incident':>8} {'lat/cur':>7} "
          f"{'lat/fp32':>8} {'size/cur':>8} {'MiB':>6}")
    for name, r in results.items():
        photo_min = f"{r['cosine_photos_min']:.4f}" if r["cosine_photos_min"] is not None else "-"
        print(f"{name:22} {r['cosine_mean']:8.4f} {r['cosine_min']:8.4f} {photo_min:>9} "
              f"{r['incident_top1_agreement']:8.3f} {r['latency_ratio']:7.3f} {r['latency_ratio_vs_fp32']:8.3f} "
              f"{r['size_ratio']:8.3f} {r['size_bytes'] / 2**20:6.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "checkpoint": str(args.checkpoint), "vision_model": cfg.vision_model, "image_size": cfg.image_size,
        "calibration_images": len(imgs.calibration), "held_out_images": len(imgs.held_out),
        "held_out_photos": n_photo, "timing_rounds": args.repeats, "fp32_latency_ms": lat["fp32"] * 1e3,
        "fp32_size_bytes": fp32_size, "recipes": results,
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
