#!/usr/bin/env bash
# Issue 19's SFT study on a lent GPU in one call (see benchmarks/sft_train.py): 12 runs in parallel,
# the budget rule, fp16 exports, then the whole evaluation on the GPU as a cross-check.
# Everything lands in $OUT (at most 8 files): train.log, models_TASK.tgz, runs.tgz, gpu_eval.tgz.
# Sizes can be shrunk for a dry run: STEPS=20 SAVE=10 BATCH=64 NTRAIN=500 DEADLINE=0 LIMIT=20.
set -uo pipefail
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
TASKS=${TASKS:-chain,fill}
OUT=${OUT:-/tmp/sft19-out}; WORK=${WORK:-/tmp/sft19}
mkdir -p "$OUT" "$WORK"
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
python3 benchmarks/sft_train.py --runs "$WORK/runs" --out "$WORK/models" \
  --max-steps "${STEPS:-4000}" --batch "${BATCH:-256}" --save-every "${SAVE:-500}" \
  --n-train "${NTRAIN:-100000}" --select-problems "${SELECT:-500}" --deadline "${DEADLINE:-270}" \
  --tasks "${TASKS:-chain,fill}" \
  2>&1 | tee "$OUT/train.log"
for task in ${TASKS//,/ }; do
  tar czf "$OUT/models_$task.tgz" -C "$WORK/models" $(cd "$WORK/models" && ls -d "$task"-*) selection.json
done
tar czf "$OUT/runs.tgz" -C "$WORK" --exclude=checkpoints --exclude=data --exclude=final runs
device=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
mkdir -p "$WORK/gpu_eval"
timeout "${EVAL_TIMEOUT:-100}" python3 benchmarks/sft.py --models "$WORK/models" --device "$device" \
  --limit "${LIMIT:-1000}" --tasks "${TASKS:-chain,fill}" --out "$WORK/gpu_eval/sft.md" > "$WORK/gpu_eval/eval.log" 2>&1
echo "gpu eval exit $?"; tail -3 "$WORK/gpu_eval/eval.log"
tar czf "$OUT/gpu_eval.tgz" -C "$WORK" gpu_eval
ls -la "$OUT"
