"""ember_training.export: a trained EmberVLM -> the robots' model bundle (DESIGN §4)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from onnxruntime import __version__ as ort_version
from tokenizers import Tokenizer

from ember.engine.bundle import BUNDLE_JSON, FORMAT_VERSION, MODEL_FILES, sha256_file
from ember.engine.robot_selector import SELECTOR_FILE, RobotSelector
from ember.fsutil import replace_directory
from ember.labels import INCIDENT_LABELS, PLACE_LABELS, ROBOT_DISPLAY_NAMES, ROBOT_TYPES
from ember.prompting import DEFAULT_TASK, EOS_TOKEN, MAX_TASK_CHARS, PROMPT_TEMPLATE, format_prompt
from ember_training.export.calibration import calibration_batch, generated_images, load_folder
from ember_training.export.onnx_export import export_decoder, export_vision
from ember_training.export.quantize import (
    DEFAULT_VISION_RECIPE,
    optimize_for_ort,
    quantize_decoder,
    quantize_vision,
)
from ember_training.export.verify import OnnxPair, compare_fp32, compare_int8, torch_trace
from ember_training.export.wrappers import decoder_io_names
from ember_training.model import EmberVLM
from ember_training.tokenizer import special_token_ids

log = logging.getLogger(__name__)
PRECISIONS = ("int8", "fp32")
FP32_LOGIT_TOLERANCE = 1e-4
MIN_INT8_TOP1_AGREEMENT = 0.8  # teacher-forced next tokens; a broken quantization falls far below
MAX_INT8_SCORE_DRIFT = 0.25  # robot/incident scores (sigmoid); a clipped calibration range exceeds it
VERIFY_TASKS = (
    DEFAULT_TASK,
    "Find survivors in the collapsed building and report hazards.",
    "Inspect the flooded street for people who need help.",
)


STAGING_PREFIX = ".export-"  # the work/staging directory beside --output


class ExportError(RuntimeError):
    """The export failed a self-check (or could not run)."""


@dataclass
class ExportOptions:
    precision: str = "int8"
    calibration_images: str | Path | None = None
    num_calibration: int = 16
    verify_inputs: int = 3
    verify_steps: int = 8
    max_new_tokens: int = 50
    max_prompt_tokens: int | None = None  # training's data.max_prompt_tokens (engine truncates the same way)
    model_version: str | None = None
    robot_thresholds: list[float] | None = None
    robot_selector: str | Path | None = None  # robot_selector.npz written by the recipe (shipped as is)
    metrics: dict[str, Any] | None = None
    seed: int = 0
    min_int8_top1_agreement: float = MIN_INT8_TOP1_AGREEMENT  # INT8 gate (0 turns it off)
    max_int8_score_drift: float = MAX_INT8_SCORE_DRIFT  # INT8 gate (1 turns it off)


def _robot_thresholds(opts: ExportOptions) -> list[float]:
    th = opts.robot_thresholds if opts.robot_thresholds is not None else [0.5] * len(ROBOT_TYPES)
    if len(th) != len(ROBOT_TYPES) or not all(0.0 <= float(t) <= 1.0 for t in th):
        raise ExportError(f"robot_thresholds must be {len(ROBOT_TYPES)} values in [0, 1], got {th}")
    return [float(t) for t in th]


def _ship_selector(src: Path, dst: Path) -> dict[str, Any]:
    """Copy the text robot selector into the bundle after checking the engine reads it."""
    try:
        sel = RobotSelector(src, len(ROBOT_TYPES))
    except (OSError, ValueError) as exc:
        raise ExportError(f"robot selector {src}: {exc}") from exc
    shutil.copyfile(src, dst)
    samples = {task: [ROBOT_TYPES[i] for i in s.chosen]
               for task in VERIFY_TASKS if task != DEFAULT_TASK and (s := sel.select(task))}
    return {"file": SELECTOR_FILE, "words": len(sel.words), "dim": int(sel.vectors.shape[1]),
            "label_sets": int(sel.sets.shape[0]), "decides": "tasks with known words (not the default camera task)",
            "plan_steps": int(sel.step_w.shape[0]),  # the first plan steps whose robot its plan-step head decides
            "samples": samples}


def _created() -> str:
    """bundle.json's `created`: now, or SOURCE_DATE_EPOCH when set (reproducible builds: the same
    checkpoint then exports to byte-identical bundles, bundle.json included)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            when = datetime.fromtimestamp(int(epoch), timezone.utc)
        except (ValueError, OverflowError, OSError) as exc:
            raise ExportError(f"SOURCE_DATE_EPOCH must be seconds since 1970, got {epoch!r}") from exc
    else:
        when = datetime.now(timezone.utc)
    return when.isoformat(timespec="seconds")


def _images(opts: ExportOptions, image_size: int) -> tuple[list, list, str, dict[str, Any]]:
    """(calibration images, verification images, calibration source, their record for bundle.json).

    The export checks run on images INT8 was not calibrated on: the folder's next images, topped
    up with generated scenes of another seed (calibration ranges fitted to the very images that
    check them would hide clipping)."""
    if opts.calibration_images:
        folder = load_folder(opts.calibration_images, opts.num_calibration, opts.verify_inputs, image_size)
        calib, held, source = folder.calibration, folder.held_out, str(opts.calibration_images)
        summary = folder.summary(opts.num_calibration)
        (log.warning if len(calib) < opts.num_calibration else log.info)("calibration folder %s: %s", source, summary)
    else:
        calib = generated_images(opts.num_calibration, seed=opts.seed)
        held, source = [], f"generated:{len(calib)}"
    verify = held + generated_images(opts.verify_inputs - len(held), seed=opts.seed + 1)
    record = {"calibration_images": len(calib), "verify_images": {"held_out": len(held), "generated": len(verify) - len(held)}}
    return calib, verify, source, record


def _int8_gate(checks: dict[str, Any], opts: ExportOptions) -> None:
    """ExportError naming every INT8 check outside its gate (and what to do about it)."""
    failed = []
    if checks["int8_top1_agreement"] < opts.min_int8_top1_agreement:
        failed.append(f"next-token agreement {checks['int8_top1_agreement']:.3f} < {opts.min_int8_top1_agreement}")
    for key, what in (("int8_robot_score_max_drift", "robot"), ("int8_incident_score_max_drift", "incident")):
        if checks[key] > opts.max_int8_score_drift:
            failed.append(f"{what} score drift {checks[key]:.3f} > {opts.max_int8_score_drift}")
    if failed:
        v = checks["verify_images"]
        raise ExportError(
            f"INT8 model disagrees with FP32 ({'; '.join(failed)}; on {v['held_out'] + v['generated']} images "
            f"not used for calibration): calibrate on more images like the robots' cameras "
            f"(--calibration-images), export --precision fp32, or relax the gate "
            f"(--min-int8-top1-agreement, --max-int8-score-drift); no bundle written"
        )


def _remove_dead_staging(parent: Path) -> None:
    """Remove staging directories of exports that died (kill -9, OOM): theirs are the ones whose
    flock nobody holds any more (a running export holds its own until it ends)."""
    for d in parent.glob(STAGING_PREFIX + "*"):
        try:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live export's
        else:
            log.info("removing %s, left by an export that did not finish", d)
            shutil.rmtree(d, ignore_errors=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _staging(parent: Path) -> Iterator[Path]:
    """A work directory beside the output (same file system: the bundle is moved in by rename),
    locked while this export runs so that a later export can tell a dead one's from a live one's."""
    _remove_dead_staging(parent)
    # created under another name and renamed once locked: a sweeper never sees it unlocked
    tmp = Path(tempfile.mkdtemp(prefix=".exporting-", dir=parent))
    fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        locked = tmp.with_name(STAGING_PREFIX + tmp.name.removeprefix(".exporting-"))
        tmp.rename(locked)
        tmp = locked
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(fd)


def _check_output(dst: Path) -> None:
    """An output may be new, an empty directory or an existing bundle (replaced); anything else is refused."""
    if dst.exists():
        if not dst.is_dir():
            raise ExportError(f"output {dst} exists and is not a directory")
        if any(dst.iterdir()) and not (dst / BUNDLE_JSON).is_file():
            raise ExportError(f"output {dst} is a non-empty directory that is not a bundle; refusing to replace it")


def _replace_dir(src: Path, dst: Path) -> None:
    """Move the finished bundle into place, replacing an existing bundle (or empty directory) at dst."""
    _check_output(dst)
    replace_directory(src, dst)


def export_bundle(
    model: EmberVLM,
    tokenizer: Tokenizer,
    output: str | Path,
    options: ExportOptions | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the bundle directory `output` and return its bundle.json dict.

    FP32 parity against PyTorch must hold (max abs logit diff <= 1e-4) or ExportError is
    raised; INT8 agreement and drift are measured and recorded in bundle.json.
    """
    opts = options or ExportOptions()
    if opts.precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {PRECISIONS}, got {opts.precision!r}")
    model = model.eval()
    cfg = model.config
    specials = special_token_ids(tokenizer)
    if tokenizer.get_vocab_size() > cfg.vocab_size:
        raise ExportError(
            f"tokenizer has {tokenizer.get_vocab_size()} tokens but the model only {cfg.vocab_size}"
        )
    thresholds = _robot_thresholds(opts)
    output = Path(output)
    _check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    if not (0.0 <= opts.min_int8_top1_agreement <= 1.0 and 0.0 <= opts.max_int8_score_drift <= 1.0):
        raise ExportError("the INT8 gates (min top-1 agreement, max score drift) must be in [0, 1]")
    created = _created()
    images, verify_images, calib_source, image_record = _images(opts, cfg.image_size)
    pixels = calibration_batch(images, cfg.image_size, cfg.image_mean, cfg.image_std)
    verify_pixels = calibration_batch(verify_images, cfg.image_size, cfg.image_mean, cfg.image_std)
    del images, verify_images

    with _staging(output.parent) as tmp:
        work, stage = tmp / "work", tmp / "bundle"
        work.mkdir()
        stage.mkdir()
        export_vision(model, work / "vision_raw.onnx")
        export_decoder(model, work / "decoder_raw.onnx")
        for name in ("vision", "decoder"):  # what the robot runs, pre-optimized for onnxruntime
            optimize_for_ort(work / f"{name}_raw.onnx", work / f"{name}_fp32.onnx")
        n_heads, head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        n_layers = model.decoder.lm.config.n_layer

        # --- self-checks
        prompts = [
            tokenizer.encode(format_prompt(VERIFY_TASKS[i % len(VERIFY_TASKS)]), add_special_tokens=False).ids
            for i in range(opts.verify_inputs)
        ]
        rows = [verify_pixels[i][None] for i in range(opts.verify_inputs)]
        fp32 = OnnxPair(
            str(work / "vision_fp32.onnx"), str(work / "decoder_fp32.onnx"), n_layers, n_heads, head_dim
        )
        ref = [torch_trace(model, px, ids, opts.verify_steps) for px, ids in zip(rows, prompts, strict=True)]
        onnx_fp32 = [
            fp32.trace(px, ids, opts.verify_steps, r.tokens[:-1])
            for px, ids, r in zip(rows, prompts, ref, strict=True)
        ]
        checks: dict[str, Any] = compare_fp32(ref, onnx_fp32)
        checks["fp32_logit_tolerance"] = FP32_LOGIT_TOLERANCE
        if checks["fp32_max_abs_logit_diff"] > FP32_LOGIT_TOLERANCE:
            raise ExportError(
                f"ONNX FP32 logits differ from PyTorch by {checks['fp32_max_abs_logit_diff']:.3g} "
                f"(> {FP32_LOGIT_TOLERANCE}); the export is wrong"
            )

        if opts.precision == "int8":
            quantize_vision(work / "vision_raw.onnx", work / "vision_int8.onnx", pixels, DEFAULT_VISION_RECIPE)
            quantize_decoder(work / "decoder_raw.onnx", work / "decoder_int8.onnx")
            for name in ("vision", "decoder"):
                optimize_for_ort(work / f"{name}_int8.onnx", stage / f"{name}.onnx")
            int8 = OnnxPair(
                str(stage / "vision.onnx"), str(stage / "decoder.onnx"), n_layers, n_heads, head_dim
            )
            fp32_greedy = [
                fp32.trace(px, ids, opts.verify_steps) for px, ids in zip(rows, prompts, strict=True)
            ]
            q = [
                int8.trace(px, ids, opts.verify_steps, f.tokens[:-1])
                for px, ids, f in zip(rows, prompts, fp32_greedy, strict=True)
            ]
            free = [int8.trace(px, ids, opts.verify_steps) for px, ids in zip(rows, prompts, strict=True)]
            checks.update(image_record)
            checks["vision_quantization"] = asdict(DEFAULT_VISION_RECIPE)
            checks.update(compare_int8(fp32_greedy, q, free, thresholds))
            checks["int8_gates"] = {
                "min_int8_top1_agreement": opts.min_int8_top1_agreement,
                "max_int8_score_drift": opts.max_int8_score_drift,
            }
            del int8
            _int8_gate(checks, opts)
        else:
            checks["verify_images"] = image_record["verify_images"]
            shutil.copyfile(work / "vision_fp32.onnx", stage / "vision.onnx")
            shutil.copyfile(work / "decoder_fp32.onnx", stage / "decoder.onnx")
        del fp32
        checks["verify_inputs"] = opts.verify_inputs
        checks["verify_decode_steps"] = opts.verify_steps
        tokenizer.save(str(stage / "tokenizer.json"))
        names = list(MODEL_FILES)
        selector_meta = None
        if opts.robot_selector is not None:
            selector_meta = _ship_selector(Path(opts.robot_selector), stage / SELECTOR_FILE)
            names.append(SELECTOR_FILE)

        files = {
            name: {"sha256": sha256_file(stage / name), "bytes": (stage / name).stat().st_size}
            for name in names
        }
        src = dict(source or {})
        model_version = opts.model_version or (
            f"{src.get('config_name', 'ember')}-step{src.get('step', 0)}-{opts.precision}-{files['decoder.onnx']['sha256'][:8]}"
        )
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "model_version": model_version,
            "created": created,
            "precision": opts.precision,
            "image_size": cfg.image_size,
            "mean": cfg.image_mean,
            "std": cfg.image_std,
            "num_visual_tokens": cfg.num_visual_tokens,
            "d_model": cfg.d_model,
            "n_layers": n_layers,
            "n_heads": n_heads,
            "head_dim": head_dim,
            "n_positions": cfg.n_positions,
            "vocab_size": cfg.vocab_size,
            "robot_types": list(ROBOT_TYPES),
            "robot_display_names": list(ROBOT_DISPLAY_NAMES),
            "incident_labels": list(INCIDENT_LABELS),
            "place_labels": list(PLACE_LABELS),
            "prompt_template": PROMPT_TEMPLATE,
            "default_task": DEFAULT_TASK,
            "max_task_chars": MAX_TASK_CHARS,
            "max_new_tokens": opts.max_new_tokens,
            "max_prompt_tokens": int(
                opts.max_prompt_tokens or cfg.n_positions - cfg.num_visual_tokens - opts.max_new_tokens
            ),
            "special_token_ids": specials,
            "eos_token_id": specials[EOS_TOKEN],
            "robot_thresholds": thresholds,
            "robot_selector": selector_meta,
            "calibration": calib_source if opts.precision == "int8" else None,
            "onnxruntime_version": ort_version,
            "decoder_io": {
                "inputs": decoder_io_names(n_layers)[0],
                "outputs": decoder_io_names(n_layers)[1],
                "kv_cache": (
                    "per layer [1, n_heads, capacity, head_dim], updated in place (GroupQueryAttention): bind "
                    "past_* and present_* to one buffer; total_sequence_length = valid positions after the "
                    "call, seqlens_k = [total - 1]; batch 1; visual_embeds has V rows on prefill, 0 after"
                ),
            },
            "onnx_optimization": "onnxruntime ORT_ENABLE_EXTENDED (offline, hardware independent)",
            "source": src,
            "metrics": dict(opts.metrics or {}),
            "export_checks": checks,
            "files": files,
        }
        (stage / BUNDLE_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _replace_dir(stage, output)
    log.info("bundle written to %s (%s) in %.1f s", output, opts.precision, time.perf_counter() - t_start)
    return meta


def bundle_size_bytes(bundle_dir: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(bundle_dir).iterdir() if p.is_file())
