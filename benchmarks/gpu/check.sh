#!/usr/bin/env bash
# The GPU figures in one device call, prepared by benchmarks/gpu/prepare.sh. All stages together, set-up included,
# take at most $BUDGET_S seconds (360 by default), which leaves room for a second try in a 15-minute device lease.
# Smallest stages first; each writes its result file in $OUT as it runs (the device tool brings $OUT back) and ends
# it with "rc=... after ... s" (124: the stage ran out of its time):
#  1. machine.txt     the GPU, torch and torchvision versions (the borrowed machine has torch 2.11, torchvision 0.26);
#  2. optim_bench.txt LARS per parameter vs multi-tensor, fused SGD (<= 30 s);
#  3. tests.txt       the tests that need CUDA (skipped on CPU machines): tiled loss CUDA == CPU, BatchAugment on
#                     CUDA, stage_images / batch_to_device, the non-finite guard's device path, the no-host-sync
#                     suite, the training loop under torch.cuda.set_sync_debug_mode("error") (<= 120 s);
#  4. train_bench_bf16.txt, 5. train_bench_fp32.txt: issue 8's GPU target, CIFAR-10 epoch time, CIFAR-stem ResNet-18
#     (full width), batch 512, 8 loader workers, two epochs per pipeline (the second is the steady one), lightly vs
#     contrastkit; bf16 autocast first, then fp32 with what time is left.
#
#   device run, carry [".gpu"], timeout_s 420:  bash benchmarks/gpu/check.sh
#   dry run on a CPU machine (tiny subset):     PY=.venv/bin/python DEVICE=cpu SUBSET=1 WIDTH=0.25 BATCH=128 \
#                                                   bash benchmarks/gpu/check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/ck-gpu-out}
BUDGET_S=${BUDGET_S:-360}
mkdir -p "$OUT"

# stage NAME CAP_S FILE CMD...: run CMD for at most CAP_S seconds and never past the budget, output to $OUT/FILE.
stage() {
    local name=$1 cap=$2 file=$3
    shift 3
    local left=$((BUDGET_S - SECONDS - 5))
    if ((left < 15)); then
        echo "== $name: skipped, ${left}s left of the ${BUDGET_S}s budget" | tee "$OUT/$file"
        return
    fi
    local limit=$((cap < left ? cap : left))
    echo "== $name (at most ${limit}s; ${SECONDS}s elapsed)"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$file" | tail -15
    local rc=${PIPESTATUS[0]}
    echo "rc=$rc after ${SECONDS}s" | tee -a "$OUT/$file"
}
[ -f .gpu/cifar10-jpg.tar.gz ] || { echo "no .gpu/cifar10-jpg.tar.gz: run benchmarks/gpu/prepare.sh here first"; exit 2; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ck-site .gpu/*.whl \
    || exit 2
export PYTHONPATH="$PWD/src:/tmp/ck-site"
mkdir -p /tmp/ck-data
[ -d /tmp/ck-data/cifar10/train ] || tar -xzf .gpu/cifar10-jpg.tar.gz -C /tmp/ck-data
export CONTRASTKIT_CIFAR10=/tmp/ck-data/cifar10
STEPS_ARGS=(--epochs 2)
if [ -n "${SUBSET:-}" ]; then  # dry run: 200 images per class, one epoch
    sub=/tmp/ck-data/cifar10-sub
    if [ ! -d "$sub" ]; then
        for split in train test; do
            for d in /tmp/ck-data/cifar10/$split/*/; do
                mkdir -p "$sub/$split/$(basename "$d")"
                ls "$d" | head -200 | while read -r f; do ln -s "$d$f" "$sub/$split/$(basename "$d")/$f"; done
            done
        done
    fi
    export CONTRASTKIT_CIFAR10=$sub
    STEPS_ARGS=(--epochs 1)
fi
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/machine.txt"
stage "optim_bench on $DEVICE (LARS per parameter vs multi-tensor, fused SGD)" 30 optim_bench.txt \
    "$PY" benchmarks/optim_bench.py --device "$DEVICE" --encoder resnet50 --steps 20
stage "CUDA tests" 120 tests.txt \
    "$PY" -m pytest -q -p no:cacheprovider tests/losses/test_tiled.py tests/augment/test_batch.py \
    tests/augment/test_device_path.py tests/data/test_stage_images.py tests/reliability/test_nonfinite.py \
    tests/train/test_no_host_sync.py tests/train/test_sync_debug.py -rs
BENCH=("$PY" benchmarks/train_bench.py --device "$DEVICE" --width "${WIDTH:-1}" --batch-size "${BATCH:-512}"
       "${STEPS_ARGS[@]}" --workers 8)
stage "train_bench on $DEVICE, bf16 autocast" 110 train_bench_bf16.txt \
    "${BENCH[@]}" --pipelines contrastkit-device+bf16,lightly+bf16
stage "train_bench on $DEVICE, fp32" 110 train_bench_fp32.txt \
    "${BENCH[@]}" --pipelines lightly,contrastkit-device
echo "all stages: ${SECONDS}s of ${BUDGET_S}s"
