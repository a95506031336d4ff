#!/bin/bash
# GPU sweep driver: every variant in parallel on one GPU, results as JSON into ${OUT:-sweep_out}.
cd "$(dirname "$0")"
OUT=${OUT:-sweep_out}; mkdir -p "$OUT"
STEPS=${STEPS:-2500}
G="--distill 1 --generic 35000"
declare -A V=(
  [sup]="--w-sup 1"
  [dist]="--distill 1"
  [dist_gen]="$G"
  [dist_gen_init]="$G --init 0.5"
  [dist_gen_init_fix]="$G --init 0.5 --fixed-proj 1"
  [dist_gen_init_ps]="$G --init 0.5 --powerset 1"
  [dist_gen_init_soft]="$G --init 0.5 --teacher-soft 1"
  [dist_gen_init_ps_soft]="$G --init 0.5 --powerset 1 --teacher-soft 1"
  [init_sup]="--init 0.5"
  [dist_gen_init_soft_fix]="$G --init 0.5 --teacher-soft 1 --fixed-proj 1"
)
for k in "${!V[@]}"; do
  PYTHONUNBUFFERED=1 python3 sweep.py --name "$k" --steps "$STEPS" ${V[$k]} --out "$OUT/$k.json" > "$OUT/$k.log" 2>&1 &
done
wait
cat "$OUT"/*.log | grep -v -i warn
