"""Edge benchmark (issue 4): PyTorch FP32 eager vs ONNX FP32 vs ONNX INT8, 1 thread, same weights.

    python bench/edge.py [--config small|full] [--json PATH] [--tokens 50] [--repeats 3]

Builds the config's EmberVLM with seeded random weights (cost does not depend on the
values), with a text robot selector of the config's size (robot_selection.selector), exports
an FP32 and an INT8 bundle from the same model and times, single
threaded: vision, 50-token greedy generation (KV cache, EOS ignored so every run decodes
the same number of tokens) and the total analyze, on a 640x480 photo of ../shared. The
INT8 peak RSS is the VmHWM of a fresh process that only loads the INT8 bundle and analyzes
that photo (handed over decoded, as a ROS node receives frames) three times: a robot analyses
frame after frame, and the second analysis peaks higher than the first (the code and data pages
the first one maps in are resident when the next one's vision activations are live); the peak
of the first analysis alone is reported beside it. Prints a table and writes
JSON (default bench/results/edge.json; earlier runs of other configs are kept under
`by_config`). Sizes are MiB (2**20 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "bench" / "results" / "edge.json"
MIB = 2**20
TASK = "Find people trapped near the fire and choose the robots to respond."
LIMITS = {
    "small": {"int8_peak_rss_mb": 100.0, "int8_bundle_mb": 25.0, "speedup_vs_torch": 4.0},
    "full": {"int8_bundle_mb": 40.0, "speedup_vs_torch": 4.0},
}

# Peak RSS = VmHWM of the fresh process (ru_maxrss is not used: Linux carries it over from the
# forked parent across exec, so a child of a big benchmark process would report the parent's peak).
RSS_SCRIPT = r"""
import sys
def hwm_kib():
    with open("/proc/self/status") as fh:
        return int(next(l for l in fh if l.startswith("VmHWM:")).split()[1])
import numpy as np
from ember.engine import EmberEngine
after_import = hwm_kib()
engine = EmberEngine(sys.argv[1], threads=1)
after_load = hwm_kib()
img = np.load(sys.argv[4])  # a decoded camera frame (uint8 RGB), as a ROS node would receive it
a = engine.analyze(img, sys.argv[2], max_new_tokens=int(sys.argv[3]), stop_at_eos=False)
after_first = hwm_kib()
for _ in range(2):  # the frames after the first: the robot's steady peak
    a = engine.analyze(img, sys.argv[2], max_new_tokens=int(sys.argv[3]), stop_at_eos=False)
print(f"RSS {after_import} {after_load} {after_first} {hwm_kib()} {a.num_generated_tokens}")
"""


def _corpus() -> list[str]:
    from ember_training.testing import tiny_corpus

    texts = tiny_corpus()
    shared = ROOT.parent / "shared" / "data" / "robot_selection"
    for path in sorted(shared.glob("*.json")):
        texts.append(path.read_text(encoding="utf-8"))
    return texts


def _tokenizer(config: dict):
    from ember_training.tokenizer import build_tokenizer

    spec = dict(config["tokenizer"])
    spec.pop("path", None)
    return build_tokenizer(spec, _corpus() if spec.get("kind") == "bpe" else None)


def _median_ms(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), out


def bench_torch(model, image, tokens: int, repeats: int) -> dict[str, float]:
    import torch

    from ember.engine.preprocess import preprocess

    cfg = model.config

    def pixels():
        return torch.from_numpy(preprocess(image, cfg.image_size, cfg.image_mean, cfg.image_std))

    from ember.prompting import format_prompt

    prompt = torch.tensor([model._bench_tok.encode(format_prompt(TASK), add_special_tokens=False).ids])
    with torch.inference_mode():
        vision_ms, _ = _median_ms(lambda: model.encode_image(pixels()), repeats)
        total_ms, gen = _median_ms(lambda: model.generate(pixels(), prompt, tokens, eos_token_id=None), repeats)
    assert len(gen.token_ids) == tokens, len(gen.token_ids)
    return {"vision_ms": vision_ms, "generate_ms": total_ms - vision_ms, "total_ms": total_ms}


def bench_engine(bundle: Path, image, tokens: int, repeats: int) -> dict[str, float]:
    from ember.engine import EmberEngine

    engine = EmberEngine(bundle, threads=1)
    runs = []
    engine.analyze(image, TASK, max_new_tokens=tokens, stop_at_eos=False)
    for _ in range(repeats):
        a = engine.analyze(image, TASK, max_new_tokens=tokens, stop_at_eos=False)
        assert a.num_generated_tokens == tokens
        runs.append(a.timings_ms)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {
        "vision_ms": med["vision_ms"],
        "generate_ms": med["prefill_ms"] + med["decode_ms"],
        "total_ms": med["total_ms"],
    }


def bench_image():
    """A real 640x480 incident photo from ../shared (RGB uint8), or a drawn scene without it."""
    import cv2
    import numpy as np

    photos = sorted((ROOT.parent / "shared" / "data" / "incidents" / "images").glob("*.jpg"))
    if photos:
        bgr = cv2.imread(str(photos[0]), cv2.IMREAD_COLOR)
        return cv2.cvtColor(cv2.resize(bgr, (640, 480), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    from ember_training.export.calibration import draw_scene

    return cv2.resize(draw_scene(np.random.default_rng(0), 480), (640, 480))


def peak_rss(bundle: Path, tokens: int, image_npy: Path) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(bundle), TASK, str(tokens), str(image_npy)],
        capture_output=True, text=True, check=True, env=env, timeout=300,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RSS "))
    after_import, after_load, first, peak, _ = (int(v) for v in line.split()[1:])
    return {"import_mb": after_import / 1024, "loaded_mb": after_load / 1024, "first_mb": first / 1024,
            "peak_mb": peak / 1024}


def synthetic_selector(config_name: str, path: Path, seed: int = 0) -> Path | None:
    """A text robot selector of the config's size (robot_selection.selector: words x dim int8, the
    10 label sets of the real data) with random values: what the robots' bundle carries. None when
    the config trains no selector (its recipe is off)."""
    import numpy as np

    from ember.labels import NUM_ROBOT_TYPES
    from ember_training.config import load_config
    from ember_training.robot_selection.augment import teacher_words
    from ember_training.robot_selection.selector import save_selector

    rs = load_config(ROOT / "config" / "train" / f"{config_name}.yaml").robot_selection
    if not (rs.enabled and rs.selector.enabled):
        return None
    sc = rs.selector
    words = sorted(set(teacher_words()[: sc.words]) | {f"taskword{i}" for i in range(40)})
    rng = np.random.default_rng(seed)
    n_sets = 10
    sets = np.zeros((n_sets, NUM_ROBOT_TYPES), np.uint8)
    for i in range(n_sets):
        sets[i, rng.choice(NUM_ROBOT_TYPES, 1 + i % 3, replace=False)] = 1
    arrays = {
        "words": np.array([w.encode("ascii") for w in words]),
        "vectors": rng.integers(-127, 128, (len(words), sc.dim), dtype=np.int8),
        "scales": rng.random(len(words), dtype=np.float32) * 0.01,
        "weights": rng.random(len(words), dtype=np.float32) + 0.1,
        "head_w": rng.standard_normal((n_sets, sc.dim), dtype=np.float32),
        "head_b": rng.standard_normal(n_sets, dtype=np.float32),
        "sets": sets,
    }
    return save_selector(arrays, path)


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / MIB


def run(config_name: str, tokens: int, repeats: int, workdir: Path) -> dict:
    import numpy as np
    import onnxruntime
    import torch
    import yaml

    from ember_training.export import ExportOptions, export_bundle
    from ember_training.model import EmberVLM, ModelConfig

    torch.set_num_threads(1)
    config = yaml.safe_load((ROOT / "config" / "train" / f"{config_name}.yaml").read_text())
    cfg = ModelConfig.from_dict(config["model"])
    torch.manual_seed(0)
    model = EmberVLM(cfg).eval()
    tok = _tokenizer(config)
    model._bench_tok = tok
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    print(f"[{config_name}] {n_params / 1e6:.1f}M parameters, vocab {cfg.vocab_size} (tokenizer {tok.get_vocab_size()})", flush=True)

    selector = synthetic_selector(config_name, workdir / "robot_selector.npz")
    bundles, checks = {}, {}
    for precision in ("fp32", "int8"):
        t = time.perf_counter()
        meta = export_bundle(
            model, tok, workdir / precision, ExportOptions(precision=precision, robot_selector=selector),
            {"config_name": config_name},
        )
        bundles[precision] = workdir / precision
        checks[precision] = meta["export_checks"]
        print(f"[{config_name}] exported {precision} in {time.perf_counter() - t:.1f}s", flush=True)

    image = bench_image()
    np.save(workdir / "image.npy", image)
    torch_r = bench_torch(model, image, tokens, repeats)
    fp32_r = bench_engine(bundles["fp32"], image, tokens, repeats)
    int8_r = bench_engine(bundles["int8"], image, tokens, repeats)
    rss = peak_rss(bundles["int8"], tokens, workdir / "image.npy")
    rss_fp32 = peak_rss(bundles["fp32"], tokens, workdir / "image.npy")
    result = {
        "config": config_name,
        "tokens": tokens,
        "threads": 1,
        "repeats": repeats,
        "params": n_params,
        "torch_fp32_vision_ms": torch_r["vision_ms"],
        "torch_fp32_generate_ms": torch_r["generate_ms"],
        "torch_fp32_total_ms": torch_r["total_ms"],
        "onnx_fp32_vision_ms": fp32_r["vision_ms"],
        "onnx_fp32_generate_ms": fp32_r["generate_ms"],
        "onnx_fp32_total_ms": fp32_r["total_ms"],
        "int8_vision_ms": int8_r["vision_ms"],
        "int8_generate_ms": int8_r["generate_ms"],
        "int8_total_ms": int8_r["total_ms"],
        "speedup_vs_torch": torch_r["total_ms"] / int8_r["total_ms"],
        "speedup_vs_onnx_fp32": fp32_r["total_ms"] / int8_r["total_ms"],
        "int8_peak_rss_mb": rss["peak_mb"],
        "int8_rss_after_import_mb": rss["import_mb"],
        "int8_rss_after_load_mb": rss["loaded_mb"],
        "int8_peak_rss_first_analysis_mb": rss["first_mb"],
        "fp32_peak_rss_mb": rss_fp32["peak_mb"],
        "int8_bundle_mb": dir_mb(bundles["int8"]),
        "fp32_bundle_mb": dir_mb(bundles["fp32"]),
        "export_checks_int8": checks["int8"],
        "units": {"time": "ms (median)", "size": "MiB"},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
    limits = LIMITS[config_name]
    result["acceptance"] = {
        key: {
            "value": result[key],
            "limit": lim,
            "ok": result[key] >= lim if key.startswith("speedup") else result[key] <= lim,
        }
        for key, lim in limits.items()
    }
    return result


def print_table(r: dict) -> None:
    print(f"\nEmberVLM edge benchmark: config={r['config']}, {r['tokens']} tokens, 1 thread, median of {r['repeats']}")
    print(f"{'':<18}{'vision ms':>12}{'generate ms':>14}{'total ms':>12}{'x torch':>10}")
    for label, key in (("PyTorch FP32", "torch_fp32"), ("ONNX FP32", "onnx_fp32"), ("ONNX INT8", "int8")):
        total = r[f"{key}_total_ms"]
        print(
            f"{label:<18}{r[f'{key}_vision_ms']:>12.1f}{r[f'{key}_generate_ms']:>14.1f}{total:>12.1f}"
            f"{r['torch_fp32_total_ms'] / total:>10.2f}"
        )
    print(f"INT8 bundle {r['int8_bundle_mb']:.2f} MiB (FP32 {r['fp32_bundle_mb']:.2f} MiB)")
    print(
        f"INT8 engine process peak RSS {r['int8_peak_rss_mb']:.1f} MiB "
        f"(after imports {r['int8_rss_after_import_mb']:.1f}, after load {r['int8_rss_after_load_mb']:.1f}, "
        f"first analysis {r['int8_peak_rss_first_analysis_mb']:.1f}; "
        f"FP32 bundle {r['fp32_peak_rss_mb']:.1f})"
    )
    c = r["export_checks_int8"]
    print(
        f"export checks: FP32 max |logit diff| {c['fp32_max_abs_logit_diff']:.2e}, INT8 top-1 agreement "
        f"{c['int8_top1_agreement']:.3f}, robot score drift {c['int8_robot_score_max_drift']:.4f}"
    )
    for key, a in r["acceptance"].items():
        print(f"  {'PASS' if a['ok'] else 'FAIL'} {key} = {a['value']:.2f} (limit {a['limit']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(LIMITS), default="small")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument("--tokens", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ember-edge-") as tmp:
        result = run(args.config, args.tokens, args.repeats, Path(tmp))
    print_table(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    previous = {}
    if args.json.is_file():
        try:
            previous = json.loads(args.json.read_text()).get("by_config", {})
        except (json.JSONDecodeError, AttributeError):
            previous = {}
    out = {**result, "by_config": {**previous, args.config: result}}
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if all(a["ok"] for a in result["acceptance"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
