#!/usr/bin/env bash
# Issue 27's final measurements: accuracy per CPU-minute of contrastkit's budget recipe against the lightly-based
# peer (benchmarks/quality_bench.py), on the 2-core machine, meant to run when nothing else does.
#   1. 13 minutes of training ($SHORT_S s): three seeds of ours (mean, minimum, spread), one peer run.
#   2. 60 minutes ($LONG_S s): one seed each, with kNN every $EVERY_S s of training on both sides, recorded inside
#      the one training run of each side (the evaluations are not training time): JSON and a PNG.
#   3. A markdown summary for docs/results.md (summary.md), with the targets checked.
# Every figure carries the CPU, the cores and the load average before and after its run (the JSON has them).
#   bash scripts/accuracy_per_minute.sh [short|long|summary|all]
#   # a quick check of every stage on a CIFAR-10 subset (a folder with train/ and test/ class folders)
#   CONTRASTKIT_CIFAR10=/tmp/cifar-subset SHORT_S=20 LONG_S=40 EVERY_S=15 SEEDS=0 OUT=/tmp/apm \
#       bash scripts/accuracy_per_minute.sh
# RECIPE (default cifar-budget-3, what the README runs) and RECIPE_JSON (fields on top, e.g.
# '{"size_schedule": "16:0.5,24:0.8"}') choose contrastkit's side.
# On an idle 2-core machine: "short" about 1 hour (4 x 13 minutes of training, plus setup and a kNN evaluation of
# about a minute per run), "long" about 2 hours 10 minutes (2 x 60 minutes, plus 8 kNN evaluations of about 35 s
# per side). --merge writes a new long.json only: move an earlier one away first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RECIPE=${RECIPE:-cifar-budget-3}
RECIPE_JSON=${RECIPE_JSON:-}
SHORT_S=${SHORT_S:-780}
LONG_S=${LONG_S:-3600}
EVERY_S=${EVERY_S:-450}
SEEDS=${SEEDS:-0,1,2}
OUT=${OUT:-docs/accuracy-per-minute}
stage=${1:-all}
mkdir -p "$OUT"

if awk '{exit !($1 > 0.5)}' /proc/loadavg; then
  echo "note: load average $(cut -d' ' -f1-3 /proc/loadavg) before starting; these runs are meant for an idle" \
       "machine (the JSON records the load of every run)" >&2
fi
if [[ $stage == short || $stage == all ]]; then
  $PY benchmarks/quality_bench.py --budget-s "$SHORT_S" --recipe "$RECIPE" ${RECIPE_JSON:+--recipe-json "$RECIPE_JSON"} \
      --seeds "$SEEDS" --peer-seeds 0 --json "$OUT/short.json"
fi
if [[ $stage == long || $stage == all ]]; then
  # two invocations, so that each side's JSON is written as soon as that side ends; then one file and the PNG
  $PY benchmarks/quality_bench.py --budget-s "$LONG_S" --recipe "$RECIPE" ${RECIPE_JSON:+--recipe-json "$RECIPE_JSON"} \
      --which ours --seeds 0 --knn-every-s "$EVERY_S" --json "$OUT/long-ours.json"
  $PY benchmarks/quality_bench.py --budget-s "$LONG_S" --recipe "$RECIPE" ${RECIPE_JSON:+--recipe-json "$RECIPE_JSON"} \
      --which peer --peer-seeds 0 --knn-every-s "$EVERY_S" --json "$OUT/long-peer.json"
  $PY benchmarks/quality_bench.py --merge "$OUT/long-ours.json" "$OUT/long-peer.json" --json "$OUT/long.json"
  $PY benchmarks/quality_bench.py --replot "$OUT/long.json" --plot "$OUT/long.png"
fi
if [[ $stage == summary || $stage == all ]]; then
  files=()
  for f in "$OUT/short.json" "$OUT/long.json"; do [[ -f $f ]] && files+=("$f"); done
  $PY benchmarks/quality_bench.py --summarize "${files[@]}" | tee "$OUT/summary.md"
fi
