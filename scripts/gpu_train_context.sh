#!/usr/bin/env bash
# One GPU run of the context models (issue 25), side by side on the one GPU, each with the whole
# schedule (warm-up, plateau, both decays) fitted into BUDGET seconds:
#   - context: stride 8, fine-tunes INIT (default: models/context.pt, stage 14a's weights)
#     jointly, transforms included; with TOP_RATES=LO,HI (e.g. 3,6: the default family's -q
#     77-100) its steps sample only those rate positions (--train-rates);
#   - context-low: stride 16, warm-started from the bundled hyperprior-low (means, slice contexts
#     and the h_a/h_s changes new), over its lambdas.
# Then the CUDA tests (integers equal on CPU and CUDA) and, when a few Kodak images are carried in
# .data/kodak, the GPU's encode/decode speed with the new context model. Each model, log and
# compact checkpoint (about 16 MB, in parts) goes to $OUT (the device tool's folder). On the GPU machine,
# from the repository root, with the training photos copied to .data/bsds500:
#   BUDGET=400 bash scripts/gpu_train_context.sh
# Carry .data (and .whl when the machine lacks the packages). The same script runs on a CPU at tiny
# scale: DEVICE=cpu BUDGET=20 BATCH=2 CROP=64 DATA=folder bash scripts/gpu_train_context.sh
set -u
OUT=${OUT:-runs/gpu}
BUDGET=${BUDGET:-400}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.data/bsds500}
RUN=${RUN:-/tmp/aec-ctx}
mkdir -p "$OUT" "$RUN"
source scripts/gpu_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
INIT=${INIT:-models/context.pt}
common=(--batch-size "${BATCH:-16}" --crop "${CROP:-256}" --steps 10000000 --time-budget "$BUDGET"
  --log-every 250 --checkpoint-every 2000 --device "$DEVICE" --workers "${WORKERS:-4}"
  --val-every 100000000 --ema 0.999 --ms-ssim-weight 0.3 --precision fp32 --lr 2e-4)
# the budget counts training only: loading, the final validation and writing come on top
top=()
if [ -n "${TOP_RATES:-}" ]; then top=(--train-rates "$TOP_RATES"); fi
timeout $((BUDGET + 150)) python3 -m aecompress train "$DATA" -o "$RUN/context.pt" --init "$INIT" \
  --seed 26 --name context "${common[@]}" "${top[@]}" >"$RUN/context.out" 2>&1 &
timeout $((BUDGET + 150)) python3 -m aecompress train "$DATA" -o "$RUN/context-low.pt" --arch context \
  --init models/hyperprior-low.pt --stride 16 --lambdas 0.0003,0.0008,0.002,0.005,0.0125 \
  --rate-range=-0.5,4.5 --lr-scale context=3 --lr-scale h_s=3 --lr-scale h_a=3 --seed 27 \
  --name context-low "${common[@]}" >"$RUN/context-low.out" 2>&1 &
if [ "$DEVICE" = cuda ]; then
  sleep 30
  python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -3
fi
wait
for name in context context-low; do
  tail -n 3 "$RUN/$name.out"
  cp "$RUN/$name.pt" "$OUT"/ 2>/dev/null
  # the compact checkpoint in parts under the device tool's 16 MiB a file:
  #   cat <files_at>/NAME.ckpt.part-* > models/next/NAME.ckpt
  python3 scripts/checkpoint.py compact "$RUN/$name.pt.ckpt" "$RUN/$name.ckpt" &&
    split -b 15m "$RUN/$name.ckpt" "$OUT/$name.ckpt.part-"
  tail -n 2 "$RUN/$name.pt.log.jsonl"
done
tar czf "$OUT/logs.tar.gz" -C "$RUN" $(cd "$RUN" && ls ./*.out ./*.jsonl)
if [ -d .data/kodak ] && [ -f "$RUN/context.pt" ]; then
  timeout 90 python3 benchmarks/speed.py --data .data/kodak --device "$DEVICE" --threads 2 \
    --model "$RUN/context.pt" >"$OUT/speed.txt" 2>&1
  cat "$OUT/speed.txt"
fi
