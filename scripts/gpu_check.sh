#!/usr/bin/env bash
# One prepared check on a lent GPU machine (the `device` tool; never CI). From the repository root:
#   OUT=/some/dir bash scripts/gpu_check.sh
# 1. what the machine has (GPU, torch, CUDA);
# 2. the CUDA tests (`pytest -m cuda`: bf16/fp16 autocast steps, fp16 checkpoint resume);
# 3. a short bf16 run of small.yaml's model under torchrun (NCCL, data shared by the node's ranks),
#    demo.yaml's schedule at GPU batch sizes: per-stage seconds and steps/s in $OUT/summary.json and
#    $OUT/metrics_stage*.jsonl, to compare with docs/TRAINING.md's "How long on a GPU".
# Each part has its own time limit and writes to $OUT as it goes, so a part that fails or overruns
# leaves the others' results. The machine has its own python3 with torch (nothing can be installed
# there): the repository is used from source (PYTHONPATH). Knobs for a dry run on a CPU:
# PYTHON, GPU_PARTS (default "tests train"), GPU_STEPS, GPU_STEPS_REASONING (default GPU_STEPS),
# GPU_SCENES, GPU_CAPTION_IMAGES, GPU_BATCH, GPU_WORKERS, GPU_TEST_LIMIT_S, GPU_RUN_LIMIT_S.
# The robot-selection files: ROBOT_DIR (default ../shared/data/robot_selection).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-/tmp/ember_gpu_check}
PYTHON=${PYTHON:-python3}
STEPS=${GPU_STEPS:-200}
STEPS4=${GPU_STEPS_REASONING:-$STEPS}
PARTS=${GPU_PARTS:-tests train}
ROBOT_DIR=${ROBOT_DIR:-$ROOT/../shared/data/robot_selection}
RUN=$(mktemp -d /tmp/ember_gpu_run.XXXXXX)
mkdir -p "$OUT"
export PYTHONPATH="$ROOT:$ROOT/ros2_ws/src/ember${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
LOG="$OUT/log.txt"
say() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$LOG"; }

machine() {
say "machine"
{ nvidia-smi -L 2>&1 || echo "no nvidia-smi"
  "$PYTHON" -c "import torch, timm, tokenizers, transformers, onnx, onnxruntime, cv2, numpy
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(),
      'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())
print('timm', timm.__version__, 'tokenizers', tokenizers.__version__, 'transformers', transformers.__version__,
      'onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee -a "$LOG"
}

tests() {
say "CUDA tests"
timeout "${GPU_TEST_LIMIT_S:-240}" "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda \
    tests/training/test_devices.py tests/training/test_checkpoint_kinds.py 2>&1 | tail -25 | tee -a "$LOG"
echo "pytest exit: ${PIPESTATUS[0]}" | tee -a "$LOG"
}

train() {
say "bf16 run under torchrun ($STEPS steps per stage, $STEPS4 in stage 4)"
cat > "$RUN/gpu.yaml" <<EOF
extends: $ROOT/config/train/demo.yaml
data:
  synth: {scenes: ${GPU_SCENES:-1500}, caption_images: ${GPU_CAPTION_IMAGES:-300}, image_size: 256}
  num_workers: ${GPU_WORKERS:-8}
  robot_selection_dir: $ROBOT_DIR
train: {batch_size: ${GPU_BATCH:-64}, precision: bf16, checkpoint_every: 100000, log_every: 10}
stages:
  alignment: {steps: $STEPS}
  instruct: {steps: $STEPS}
  incidents: {steps: $STEPS}
  reasoning: {steps: $STEPS4}
robot_selection: {enabled: false}
tracking: {codecarbon: false}
EOF
timeout "${GPU_RUN_LIMIT_S:-330}" "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 \
    -m ember_training.cli.train --config "$RUN/gpu.yaml" --output-dir "$RUN/out" > "$RUN/train.log" 2>&1
echo "train exit: $?" | tee -a "$LOG"
tr "\r" "\n" < "$RUN/train.log" | grep -v "%|" | tail -40 >> "$LOG"
cp "$RUN/out/summary.json" "$OUT/summary.json" 2>/dev/null
for d in "$RUN"/out/stage*; do
    [ -f "$d/metrics.jsonl" ] && cp "$d/metrics.jsonl" "$OUT/metrics_$(basename "$d").jsonl"
done
"$PYTHON" - "$RUN/out" <<'EOF' 2>&1 | tee -a "$LOG"
"""Steps/s per stage: whole stage (start-up and evaluation included) and between logged steps."""
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {"stages": []}
for st in summary["stages"]:
    rows = [json.loads(x) for x in (Path(st["checkpoint"]).parent / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time" in r and "loss" in r]
    steady = (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["time"] - rows[0]["time"]) if len(rows) > 1 else float("nan")
    print(f"stage {st['stage']} {st['name']}: {st['steps']} steps in {st['seconds']:.1f} s = "
          f"{st['steps'] / st['seconds']:.2f} steps/s whole, {steady:.2f} steps/s between logged steps; "
          f"loss {st['first_loss']:.3f} -> {st['last_loss']:.3f}")
EOF
}

machine
for part in $PARTS; do "$part"; done
say "done"
rm -rf "$RUN"
