#!/usr/bin/env bash
# One GPU run of the variable-rate hyperpriors (the next default family): continues each committed
# CPU state side by side on the one GPU (models/next/hyperprior.ckpt, the stride-8 model for the
# high rates; models/next/hyperprior-low.ckpt, the stride-16 model for the low rates), and writes
# each model, its compact checkpoint (weights, optimizer, weight average) and its log to $OUT (the
# device tool's folder). Without any committed state it warm-starts the stride-8 model from the
# bundled default-top8. On the GPU machine, from the repository root, with BSDS500 copied to
# .data/bsds500:
#   BUDGET=480 bash scripts/gpu_train_hyperprior.sh
# Carry .data (and .whl when the machine lacks the packages). Afterwards, on this machine:
#   cat <files_at>/NAME.ckpt.part-* > models/next/NAME.ckpt (then as docs/training.md says)
set -u
OUT=${OUT:-runs/gpu}
BUDGET=${BUDGET:-480}
RUN=/tmp/aec-hp
mkdir -p "$OUT" "$RUN"
source scripts/gpu_env.sh
export OMP_NUM_THREADS=4
common=(--log-every 250 --checkpoint-every 2000 --device cuda --workers 4 --val-every 100000000)
names=()
for name in hyperprior hyperprior-low; do
  [ -f "models/next/$name.ckpt" ] || continue
  # resumed exactly (its batch, crops and schedule: STEPS is the schedule's total, the decays sit
  # at 78% and 93% of it); timeout's SIGTERM makes it save and stop cleanly
  python3 scripts/checkpoint.py expand "models/next/$name.ckpt" "$RUN/$name.pt.ckpt"
  timeout "$BUDGET" python3 -m aecompress train .data/bsds500 -o "$RUN/$name.pt" --resume \
    --steps "${STEPS:-40000}" "${common[@]}" >"$RUN/$name.out" 2>&1 &
  names+=("$name")
done
if [ ${#names[@]} -eq 0 ]; then
  timeout $((BUDGET + 90)) python3 -m aecompress train .data/bsds500 -o "$RUN/hyperprior.pt" \
    --arch hyperprior --init models/default-top8.pt --lr 2e-4 --steps 10000000 --seed 15 \
    --batch-size 16 --crop 256 --time-budget "$BUDGET" --name hyperprior "${common[@]}" \
    >"$RUN/hyperprior.out" 2>&1 &
  names+=(hyperprior)
fi
wait
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_hyperprior.py 2>&1 | tail -3
for name in "${names[@]}"; do
  cp "$RUN/$name.pt" "$RUN/$name.out" "$OUT"/ 2>/dev/null
  # the compact checkpoint (about 15 MB) in parts under the device tool's 16 MiB a file:
  #   cat <files_at>/NAME.ckpt.part-* > models/next/NAME.ckpt
  python3 scripts/checkpoint.py compact "$RUN/$name.pt.ckpt" "$RUN/$name.ckpt" &&
    split -b 15m "$RUN/$name.ckpt" "$OUT/$name.ckpt.part-"
  tail -n 2 "$RUN/$name.pt.log.jsonl"
done
