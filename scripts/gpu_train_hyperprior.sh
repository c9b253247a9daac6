#!/usr/bin/env bash
# One GPU run of the variable-rate hyperprior (the next default codec): continues the committed
# CPU state when it is carried, else warm-starts from the bundled default-top8, and writes the
# model, its checkpoint (weights and optimizer) and the log to $OUT (the device tool's folder).
# On the GPU machine, from the repository root, with BSDS500 copied to .data/bsds500:
#   BUDGET=480 bash scripts/gpu_train_hyperprior.sh
# Carry .data (and .whl when the machine lacks the packages). Afterwards, on this machine:
#   cat <files_at>/hyperprior.ckpt.part-* > models/next/hyperprior.ckpt (then as docs/training.md says)
set -u
OUT=${OUT:-runs/gpu}
BUDGET=${BUDGET:-480}
RUN=/tmp/aec-hp
mkdir -p "$OUT" "$RUN"
source scripts/gpu_env.sh
export OMP_NUM_THREADS=4
common=(--log-every 250 --checkpoint-every 2000 --device cuda --workers 6 --val-every 100000000)
if [ -f models/next/hyperprior.ckpt ]; then
  # The committed CPU state, resumed exactly (its batch, crops and schedule: STEPS is the schedule's
  # total, the decays sit at 78% and 93% of it); timeout's SIGTERM makes it save and stop cleanly.
  python3 scripts/checkpoint.py expand models/next/hyperprior.ckpt "$RUN/hyperprior.pt.ckpt"
  timeout "$BUDGET" python3 -m aecompress train .data/bsds500 -o "$RUN/hyperprior.pt" --resume \
    --steps "${STEPS:-40000}" "${common[@]}" >"$RUN/hyperprior.out" 2>&1
else
  timeout $((BUDGET + 90)) python3 -m aecompress train .data/bsds500 -o "$RUN/hyperprior.pt" \
    --arch hyperprior --init models/default-top8.pt --lr 2e-4 --steps 10000000 --seed 15 \
    --batch-size 16 --crop 256 --time-budget "$BUDGET" --name hyperprior "${common[@]}" \
    >"$RUN/hyperprior.out" 2>&1
fi
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_hyperprior.py 2>&1 | tail -3
cp "$RUN"/hyperprior.pt "$RUN"/hyperprior.pt.log.jsonl "$RUN"/hyperprior.out "$OUT"/ 2>/dev/null
# the compact checkpoint (about 24 MB) in parts under the device tool's 16 MiB a file:
#   cat <files_at>/hyperprior.ckpt.part-* > models/next/hyperprior.ckpt
python3 scripts/checkpoint.py compact "$RUN/hyperprior.pt.ckpt" "$RUN/hyperprior.ckpt" &&
  split -b 12m "$RUN/hyperprior.ckpt" "$OUT/hyperprior.ckpt.part-"
tail -n 2 "$RUN/hyperprior.pt.log.jsonl"
