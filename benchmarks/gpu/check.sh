#!/usr/bin/env bash
# The GPU figures in one device call (at most 9.5 minutes: tests <= 2.5, train_bench <= 6, optim_bench <= 0.5, plus set-up), prepared by benchmarks/gpu/prepare.sh:
#  1. the tests that need CUDA (skipped on CPU machines): tiled loss CUDA == CPU, BatchAugment on CUDA, stage_images /
#     batch_to_device, the non-finite guard's device path, the whole no-host-sync suite, and the real training loop
#     under torch.cuda.set_sync_debug_mode("error") (--sync-debug: any host synchronisation in a step raises);
#  2. issue 8's GPU target: CIFAR-10 epoch time, CIFAR-stem ResNet-18 (full width), batch 512, 8 loader workers, two
#     epochs per pipeline (the second is the steady one), lightly vs contrastkit, fp32 and bf16 autocast.
# Everything it prints also lands in $OUT (the device tool brings it back).
#
#   device run, carry [".gpu"], timeout_s 580:  bash benchmarks/gpu/check.sh
#   dry run on a CPU machine (tiny subset):     PY=.venv/bin/python DEVICE=cpu SUBSET=1 WIDTH=0.25 BATCH=128 \
#                                                   bash benchmarks/gpu/check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/ck-gpu-out}
mkdir -p "$OUT"
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
echo "== 1. CUDA tests"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/losses/test_tiled.py tests/augment/test_batch.py \
    tests/data/test_stage_images.py tests/reliability/test_nonfinite.py tests/train/test_no_host_sync.py \
    tests/train/test_sync_debug.py -rs 2>&1 \
    | tee "$OUT/tests.txt" | tail -15
echo "== 2. train_bench on $DEVICE"
timeout 360 "$PY" benchmarks/train_bench.py --device "$DEVICE" --width "${WIDTH:-1}" --batch-size "${BATCH:-512}" \
    "${STEPS_ARGS[@]}" \
    --workers 8 --pipelines lightly,lightly+bf16,contrastkit-device,contrastkit-device+bf16 2>&1 \
    | tee "$OUT/train_bench.txt" | tail -12
echo "== 3. optim_bench on $DEVICE (LARS per parameter vs multi-tensor, fused SGD)"
timeout 30 "$PY" benchmarks/optim_bench.py --device "$DEVICE" --encoder resnet50 --steps 20 2>&1 \
    | tee "$OUT/optim_bench.txt" | tail -6
