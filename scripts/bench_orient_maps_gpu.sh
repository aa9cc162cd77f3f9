#!/usr/bin/env bash
# The full many-map orientation benchmark of issue 25 in one command, on a lent GPU machine (H100, 16 cores).
#
#   bash scripts/bench_orient_maps_gpu.sh        # -> benchmarks/results/orient_maps_full.json (+ a table)
#
# The protocol is exactly `python benchmarks/bench_orient.py --maps default` (5j0n + six 10 Å SHREC maps,
# 5,000 projections, noise variance 16 and noise-free, a fresh distance network per map with the default
# training of 3,000 steps, trained with the detected symmetry; default recovery settings), split into one
# process per map and condition (14, one CPU thread each) so that the 16 cores run them side by side; the
# distance training runs on the GPU (--device cuda; the same steps and data as on the CPU), recovery and
# refinement on the CPU. Each process trains its own copy of its map's network (same seed: the same network)
# so that no process waits for another. The per-process JSONs are merged into one (--merge).
# Budgets are in steps, not minutes. NOT yet run on a GPU: sized from CPU timings (training ~6 min per map on
# 2 CPU cores, under a minute on the GPU; recovery + refinement of 5,000 projections ~4-5 min per condition on
# 2 cores), so about 8-10 minutes on an H100 machine; SEEDS="0 1 2" triples it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MAPS=${MAPS:-"5j0n 1bxn 3d2f 1qvr 3cf3 4cr2 5mrc"}
CONDITIONS=${CONDITIONS:-"var16 clean"}
SEEDS=${SEEDS:-0}
DEVICE=${DEVICE:-$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
OUT=${OUT:-benchmarks/results/orient_maps_full.json}
PARTS=${PARTS:-runs/orient_maps_parts}
mkdir -p "$PARTS" "$(dirname "$OUT")"
export OMP_NUM_THREADS=1 PYTHONPATH=${PYTHONPATH:-$PWD/src}

pids=()
parts=()
for map in $MAPS; do
  for condition in $CONDITIONS; do
    part="$PARTS/${map}_${condition}.json"
    parts+=("$part")
    $PY benchmarks/bench_orient.py --maps "$map" --conditions "$condition" --seeds $SEEDS --threads 1 \
      --device "$DEVICE" --out "$part" > "$PARTS/${map}_${condition}.log" 2>&1 &
    pids+=($!)
  done
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if [ "$failed" -ne 0 ]; then
  echo "some runs failed: see $PARTS/*.log" >&2
fi
$PY benchmarks/bench_orient.py --merge "${parts[@]}" --out "$OUT"
