#!/usr/bin/env bash
# Trains the default codec's rate points together on one GPU within a fixed time budget, then
# writes each model's float32 weights and the training logs to $OUT (the device tool's folder).
# Usage on the GPU machine, from the repository root, with BSDS500 copied to .data/bsds500:
#   BUDGET=450 bash scripts/gpu_train.sh
# SPECS lists the runs as name:lambda:activation[:channels[:init model]]; for the high-rate members
# of the default codec (fine-tuned from the bundled model, and a wider one from scratch):
#   BUDGET=480 SPECS="hi:0.045:gdn:128:models/default.pt wide:0.045:gdn:192" bash scripts/gpu_train.sh
set -u
OUT=${OUT:-runs/gpu}
BUDGET=${BUDGET:-450}
RUN=/tmp/aec-run
mkdir -p "$OUT" "$RUN"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export OMP_NUM_THREADS=2 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
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
python3 - "$RUN" "$OUT" <<'PY'
import sys, pathlib, torch
run, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for ckpt in sorted(run.glob("*.pt.ckpt")):
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    keep = {"model": state["model"], "config": state["config"], "step": state["step"], "elapsed": state["elapsed"]}
    torch.save(keep, out / ckpt.name.replace(".pt.ckpt", ".state.pt"))
    print(ckpt.name, "step", state["step"], "elapsed", round(state["elapsed"]))
PY
cp "$RUN"/*.pt "$OUT"/ 2>/dev/null
tar czf "$OUT/logs.tar.gz" -C "$RUN" $(cd "$RUN" && ls *.out *.jsonl)
for f in "$RUN"/*.log.jsonl; do echo "$f"; tail -n 1 "$f"; done
