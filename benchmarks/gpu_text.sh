#!/usr/bin/env bash
# Issue 22's text models at a larger budget on a lent GPU, in one call: the text-*-cpu recipes
# (MDLM, ProSeCo, AR; same data, tokenizer, model and optimizer) trained side by side with more
# steps / a bigger batch / a bigger preset, each under a wall-clock limit, then PRISM's head on the
# MDLM. Scoring stays on the CPU (the SmolLM2 evaluator is not on the device machine):
#   python benchmarks/text.py --mdlm DIR/text-mdlm/final ... (see docs/results/text_runs/README.md)
# Everything lands in $OUT: train.log and text-NAME.tgz (each run's config.yaml, metrics.jsonl, final/).
# Knobs: STEPS (default 40000), BATCH (64), PRESET (cpu-tiny), LIMIT seconds per run (300),
# PRISM_STEPS (2000). The device call carries the working tree, 64 MiB at most: the tracked tree
# is about 70 MB with the cpu-small QM9 pair, so move docs/results/sft_models aside for the call
# (this script does not read it) and put it back after. A CPU dry run: STEPS=20 BATCH=8 LIMIT=120 PRISM_STEPS=5 OUT=/tmp/gt bash benchmarks/gpu_text.sh
set -uo pipefail
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/text22-out}; WORK=${WORK:-/tmp/text22}
STEPS=${STEPS:-40000}; BATCH=${BATCH:-64}; PRESET=${PRESET:-cpu-tiny}; LIMIT=${LIMIT:-300}
SAVE=$(( STEPS / 8 > 0 ? STEPS / 8 : 1 ))
mkdir -p "$OUT" "$WORK"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/train.log"
common=(--train.max_steps "$STEPS" --train.global_batch_size "$BATCH" --model.preset "$PRESET"
        --train.save_every "$SAVE" --train.eval_every "$SAVE" --train.progress_bar false)
for name in mdlm proseco ar; do
  timeout "$LIMIT" python3 -m proseco.cli train "text-$name-cpu" --output-dir "$WORK/text-$name" \
    "${common[@]}" > "$WORK/text-$name.log" 2>&1 &
done
wait
timeout "$LIMIT" python3 -m proseco.cli train text-prism-cpu --output-dir "$WORK/text-prism" \
  --model.pretrained "$WORK/text-mdlm/final" --train.max_steps "${PRISM_STEPS:-2000}" \
  --train.global_batch_size "$BATCH" --train.progress_bar false > "$WORK/text-prism.log" 2>&1
for name in mdlm proseco ar prism; do
  echo "== text-$name: $(test -f "$WORK/text-$name/final/config.json" && echo finished || echo 'NOT finished')" \
    | tee -a "$OUT/train.log"
  tail -n 2 "$WORK/text-$name.log" >> "$OUT/train.log"
done
for name in mdlm proseco ar prism; do  # one archive per run: each stays under the 16 MB a file may bring back
  test -d "$WORK/text-$name" && tar czf "$OUT/text-$name.tgz" -C "$WORK" --exclude=checkpoints "text-$name"
done
ls -la "$OUT"
