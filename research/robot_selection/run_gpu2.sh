#!/bin/bash
# Second GPU sweep: one process per (variant, fold), results per fold into $OUT.
cd "$(dirname "$0")"
OUT=${OUT:-sweep_out}; mkdir -p "$OUT"
STEPS=${STEPS:-1500}
G="--distill 1 --generic 35000 --init 0.5"
for f in 0 1 2 3 4; do
  PYTHONUNBUFFERED=1 python3 sweep.py --name recipe --only-fold $f --steps $STEPS $G --teacher-soft 1 > "$OUT/recipe_$f.log" 2>&1 &
  PYTHONUNBUFFERED=1 python3 sweep.py --name sup --only-fold $f --steps $STEPS > "$OUT/sup_$f.log" 2>&1 &
done
wait
grep -h " fold " "$OUT"/*.log
