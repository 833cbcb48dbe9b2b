#!/usr/bin/env bash
# Host side of the one-call GPU check (benchmarks/gpu/check.sh): gathers what the bare device machine lacks into the
# ignored folder .gpu/ (about 20 MB): the CIFAR-10 JPEG tarball and the lightly wheel (the peer; its imports that
# train_bench uses are all in the device image, so --no-deps). Run from the repository root:
#
#   bash benchmarks/gpu/prepare.sh
#
# then, through the device tool, with carry [".gpu"]:  bash benchmarks/gpu/check.sh
set -euo pipefail
SHARED=${SHARED:-../shared/data}
mkdir -p .gpu
cp "$SHARED/cifar10-jpg.tar.gz" .gpu/
python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu lightly==1.6.0
ls -la .gpu
du -sh .gpu
