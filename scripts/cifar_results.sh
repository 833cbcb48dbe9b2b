#!/usr/bin/env bash
# The runs behind docs/results.md ("CIFAR-10 (JPEG) protocols" and "Semi-supervised SupCon"), in order.
# Sized for the 2-core shared development machine: a width-0.25 CIFAR-stem ResNet-18 trained for
# $STEPS optimiser steps of batch 256 (a fraction of one epoch), evaluated with shortened linear/fine-tune
# epochs. Run one stage at a time or all, in this order:
#   bash scripts/cifar_results.sh [pretrain|eval|linear100|scratch|semisup|transfer|random|all]
# OMP_NUM_THREADS=1: on the shared, overloaded 2-core machine one thread was about 3x faster than two
# (spin-waiting OpenMP threads); it is not a statement about an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
CK=${CK:-.venv/bin/contrastkit}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-$HOME/.cache/contrastkit/cifar10}     # shared CIFAR-10, JPEG re-encoded, ImageFolder train/ test/
LAB=${LAB:-/tmp/cifar10-lab10}                     # symlinks to the labelled 10% (scripts/make_labelled_subset.py)
OUT=${OUT:-runs/results}
STEPS=${STEPS:-40}                                  # optimiser steps of every pretraining run (the budget)
CAP=${CAP:-600}                                     # --time-budget-s safety cap (s)
FT10_EPOCHS=${FT10_EPOCHS:-3}                       # --linear-epochs and --finetune-epochs of `eval --protocol all`
FT1_EPOCHS=${FT1_EPOCHS:-10}                        # --finetune-epochs of the 1% fine-tune
# --preset cifar: a folder data set reports no native size, so `--preset auto` would pick the 224 px imagenet preset.
COMMON=(--data "$DATA" --preset cifar --encoder resnet18 --width 0.25 --cifar-stem on --batch-size 256 --epochs 1
        --max-steps "$STEPS" --time-budget-s "$CAP" --augment-on device --num-workers 2 --knn-every 0
        --seed 0 --no-progress)
stage=${1:-all}

timed() { local t0=$SECONDS; "$@"; echo "[wall ${1##*/} $((SECONDS - t0)) s] $*" >&2; }

if [[ $stage == pretrain || $stage == all ]]; then
  timed $CK pretrain --method simclr --temperature 0.5 "${COMMON[@]}" --out "$OUT/simclr"
  timed $CK pretrain --method supcon --temperature 0.1 "${COMMON[@]}" --out "$OUT/supcon"
  timed $CK pretrain --method ce "${COMMON[@]}" --out "$OUT/ce"
fi
if [[ $stage == eval || $stage == all ]]; then
  for m in simclr supcon ce; do
    timed $CK eval --checkpoint "$OUT/$m/last.pt" --protocol all --linear-epochs "$FT10_EPOCHS" --finetune-epochs "$FT10_EPOCHS" --num-workers 2
    timed $CK eval --checkpoint "$OUT/$m/last.pt" --protocol finetune --label-fraction 0.01 --finetune-epochs "$FT1_EPOCHS"
  done
fi
if [[ $stage == linear100 || $stage == all ]]; then
  # The `all` runs above use the fine-tune epochs for the linear probe too; the probe on cached features is cheap,
  # so it is run again at its default 100 epochs (kNN again too), from one feature extraction.
  for m in simclr supcon ce; do
    timed $PY scripts/eval_knn_linear.py --checkpoint "$OUT/$m/last.pt"
  done
fi
if [[ $stage == scratch || $stage == all ]]; then
  # From-scratch controls: the same fine-tuning recipes on a randomly initialised encoder of the same architecture
  # (the checkpoint only supplies the architecture and data).
  timed $CK eval --checkpoint "$OUT/simclr/last.pt" --protocol finetune --label-fraction 0.1 --finetune-epochs "$FT10_EPOCHS" --from-scratch
  timed $CK eval --checkpoint "$OUT/simclr/last.pt" --protocol finetune --label-fraction 0.01 --finetune-epochs "$FT1_EPOCHS" --from-scratch
fi
if [[ $stage == semisup || $stage == all ]]; then
  $PY scripts/make_labelled_subset.py "$DATA" "$LAB" --fraction 0.1 --seed 0
  timed $CK pretrain --method supcon --temperature 0.1 --labeled-fraction 0.1 "${COMMON[@]}" --out "$OUT/supcon-semi10"
  # The labelled 10% alone: 5000 images, 19 steps an epoch; --epochs 10 gives a 190-step cosine schedule
  # (the full-data runs: 195), and --max-steps the same number of steps as every other run.
  timed $CK pretrain --method supcon --temperature 0.1 "${COMMON[@]/$DATA/$LAB}" --epochs 10 --out "$OUT/supcon-lab10only"
  for m in supcon-semi10 supcon-lab10only; do   # kNN and linear on the full CIFAR-10 train/test splits
    timed $PY scripts/eval_knn_linear.py --checkpoint "$OUT/$m/last.pt" --data "$DATA"
  done
fi
if [[ $stage == transfer || $stage == all ]]; then
  timed $CK eval --checkpoint "$OUT/simclr/last.pt" --data digits --protocol linear   # 100 epochs
fi
if [[ $stage == random || $stage == all ]]; then
  # Control: the same encoder, (practically) untrained: one step at lr 1e-12 leaves the random weights and only
  # moves BatchNorm's running statistics once. Shows what the short pretraining runs above add.
  timed $CK pretrain --method simclr --temperature 0.5 "${COMMON[@]}" --max-steps 1 --lr 1e-12 --weight-decay 0 \
    --out "$OUT/random"
  timed $CK eval --checkpoint "$OUT/random/last.pt" --protocol all --linear-epochs "$FT10_EPOCHS" --finetune-epochs "$FT10_EPOCHS" --num-workers 2
  timed $PY scripts/eval_knn_linear.py --checkpoint "$OUT/random/last.pt"
  timed $CK eval --checkpoint "$OUT/random/last.pt" --data digits --protocol linear   # transfer control
fi
