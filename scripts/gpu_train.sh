#!/usr/bin/env bash
# Trains the default codec's rate points together on one GPU within a fixed time budget, then
# writes each model's float32 weights and the training logs to $OUT (the device tool's folder).
# Usage on the GPU machine, from the repository root, with BSDS500 copied to .data/bsds500:
#   BUDGET=450 bash scripts/gpu_train.sh
# SPECS lists the runs as name:lambda:activation[:channels[:init model]]; the name is also the
# model's name. To continue the default family (each member from its current weights):
#   BUDGET=440 SPECS="factorized:0.01:gdn:128:models/factorized.pt default-top:0.13:gdn:128:models/default-top.pt" \
#     bash scripts/gpu_train.sh
# When a few Kodak images are carried in .data/kodak, the GPU's encode/decode speed is measured
# first (benchmarks/speed.py), before the trainings share the device.
set -u
OUT=${OUT:-runs/gpu}
BUDGET=${BUDGET:-450}
RUN=/tmp/aec-run
mkdir -p "$OUT" "$RUN"
source scripts/gpu_env.sh
export OMP_NUM_THREADS=2
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
if [ -d .data/kodak ]; then
  timeout 120 python3 benchmarks/speed.py --data .data/kodak --device cuda --threads 2 >"$OUT/speed.txt" 2>&1
  cat "$OUT/speed.txt"
fi
# name lambda activation
SPECS=${SPECS:-"q1:0.003:gdn q2:0.01:gdn q3:0.025:gdn q4:0.06:gdn relu:0.01:leakyrelu"}
for spec in $SPECS; do
  IFS=: read -r name lmbda act channels init <<<"$spec"
  extra=()
  [ -n "${init:-}" ] && extra+=(--init "$init" --lr 2e-4) || extra+=(--lr 5e-4)
  timeout $((BUDGET + 50)) python3 -m aecompress train .data/bsds500 -o "$RUN/$name.pt" \
    --lambda "$lmbda" --act "$act" --channels "${channels:-128}" "${extra[@]}" \
    --batch-size 16 --crop 256 --steps 10000000 \
    --time-budget "$BUDGET" --log-every 250 --checkpoint-every 2000 --device cuda --seed 1 \
    --name "$name" >"$RUN/$name.out" 2>&1 &
done
sleep 20
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -3
wait
cp "$RUN"/*.pt "$OUT"/ 2>/dev/null
tar czf "$OUT/logs.tar.gz" -C "$RUN" $(cd "$RUN" && ls *.out *.jsonl)
for f in "$RUN"/*.log.jsonl; do echo "$f"; tail -n 1 "$f"; done
