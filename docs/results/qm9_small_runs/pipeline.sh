#!/usr/bin/env bash
# Issue 25 from the two cpu-small training runs to the regenerated QM9 page, one step after the
# other on both cores. Rerun it after any stop (session end, SIGTERM, crash): a finished step is
# skipped (its output exists), training resumes from its newest checkpoint, and the page parts
# reuse the rows they already hold (`--resume`). Logs and outputs go to runs/qm9-25/.
#
#   nohup bash docs/results/qm9_small_runs/pipeline.sh > runs/qm9-25/pipeline.log 2>&1 &
#
# Steps: MDLM to 32000 -> its validity curve -> ship it in float16 -> float16-vs-float32 check
# -> PRISM head refit on it (15 % of its steps) -> the MDLM and PRISM rows of qm9.md -> ProSeCo
# to 16000 -> curve, ship, check -> the ProSeCo rows -> qm9.md from all rows.
# Two torch threads with passive OpenMP waiting: measured on the 2-core machine, MDLM trains at
# 4400 tokens/s alone on two threads and keeps 2400 when another process is busy (1700 with the
# default active waiting).
set -euo pipefail
cd "$(dirname "$0")/../../.."
. .venv/bin/activate
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
OUT=runs/qm9-25
mkdir -p "$OUT"
exec 9> "$OUT/.pipeline.lock"  # one pipeline at a time: a second one would race the first
flock -n 9 || { echo "pipeline.sh: already running (lock $OUT/.pipeline.lock)" >&2; exit 2; }
say() { echo "[$(date -u '+%F %T')] $*"; }

train() {  # train NAME: the cpu-small run qm9-NAME-small to its recipe's max_steps
    [ -f "runs/qm9-$1-small/final/config.json" ] && return
    say "training $1"
    proseco train "qm9-$1-small-cpu" --output-dir "runs/qm9-$1-small" --resume \
        >> "$OUT/train-$1-small.log" 2>&1
}

curve() {  # validity at T=32 every 2000 steps (and at the end) of both runs
    say "training curve"
    python benchmarks/qm9_training_curve.py --run mdlm-small=runs/qm9-mdlm-small \
        --run proseco-small=runs/qm9-proseco-small --out "$OUT/curve" --threads 2 --resume \
        --every 2000 >> "$OUT/curve.log" 2>&1
}

ship() {  # ship NAME: float16 copy into the package, then the same-samples check against float32
    local done="$OUT/shipped-$1"
    if [ ! -f "$done" ]; then
        say "shipping $1"
        python benchmarks/ship_checkpoints.py runs --prefix qm9- --suffix=-small \
            --recipe 'qm9-{name}-small-cpu' --names "$1" --dtype float16 \
            --notes docs/results/qm9_small_runs/ship_notes.md >> "$OUT/ship.log" 2>&1
        touch "$done"
    fi
    if [ ! -f "$OUT/precision-$1.json" ]; then
        say "precision check $1"
        python benchmarks/qm9_precision_check.py "runs/qm9-$1-small/final" \
            "src/proseco/assets/qm9/$1" --threads 2 --json "$OUT/precision-$1.json" \
            >> "$OUT/precision.log" 2>&1
    fi
}

checkpoints() {  # the model dirs qm9.py reads: the shipped ones and the PRISM refit
    mkdir -p runs/qm9-ckpts
    for d in src/proseco/assets/qm9/*/; do
        ln -sfn "$PWD/$d" "runs/qm9-ckpts/$(basename "$d")"
    done
    ln -sfn "$PWD/runs/qm9-prism/final" runs/qm9-ckpts/prism
}

rows() {  # rows NAME MODEL...: the unconditional rows of these models, resumable
    say "qm9.md rows: $*"
    checkpoints
    python benchmarks/qm9.py --checkpoints runs/qm9-ckpts --out "$OUT/page-$1" --threads 2 \
        --skip-guidance --resume --only-models "${@:2}" >> "$OUT/page-$1.log" 2>&1
}

main() {  # a function, so bash reads all of it before it runs (this file may be edited meanwhile)
    train mdlm
    curve
    ship mdlm
    if [ ! -f runs/qm9-prism/final/config.json ]; then
        say "PRISM head refit"
        proseco train qm9-prism-cpu --output-dir runs/qm9-prism --train.max_steps 4800 --resume \
            >> "$OUT/train-prism.log" 2>&1
    fi
    rows mdlm mdlm prism
    train proseco
    curve
    ship proseco
    rows proseco proseco
    say "qm9.md from all rows"
    cp "$OUT/curve/qm9_training_curve.json" "$OUT/curve/qm9_training_curve.png" docs/results/
    python benchmarks/qm9.py --checkpoints runs/qm9-ckpts --out docs/results --threads 2 \
        --notes docs/results/qm9_baselines_notes.md --merge-rows docs/results/qm9_rows.json \
        "$OUT/page-mdlm/qm9_rows.json" "$OUT/page-proseco/qm9_rows.json" >> "$OUT/page.log" 2>&1
    say "done: review docs/results/qm9.md, then time proseco demo"
}

main; exit  # one line: bash has read the exit before main starts
