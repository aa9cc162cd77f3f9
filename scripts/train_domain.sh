#!/usr/bin/env bash
# Train the domain-randomised segmentation model in one command (issue 19), on a lent GPU or on the CPU.
#
#   bash scripts/train_domain.sh                # segmenter; GPU if torch sees one, else CPU; resumes
#   TASK=detect bash scripts/train_domain.sh    # detector (3D U-Net, mask + centre) on the same data
#
# 1. Generates the training and validation datasets (tomolens simulate-dataset, seeds 1000.. and 8000..) in
#    parallel shards, one process per CPU core, into $DATA (skipped for shards already complete).
# 2. Trains a 2.5D slice U-Net on the 7 domain classes at 10 Å for a fixed budget of epochs × steps (budgets
#    in steps, never minutes, so a figure does not depend on the machine), resuming from $OUT.ckpt when present.
# To carry training across sessions, copy runs/segment_domain.ckpt to checkpoints/ and commit it; the next run resumes.
# Sized for under 10 minutes of GPU time on an H100 (data generation on its 16 cores ~4 min, 60 epochs × 100 steps
# of batch 16); on the 2-core development CPU run it in the background across sessions (--resume continues).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../data_cache/domain_v1}
TASK=${TASK:-segment}
case "$TASK" in
  segment) OUT=${OUT:-runs/segment_domain} ;;
  detect) OUT=${OUT:-runs/detect_domain} ;;
  *) echo "TASK must be segment or detect, not '$TASK'" >&2; exit 2 ;;
esac
N_TRAIN=${N_TRAIN:-96}
N_VAL=${N_VAL:-4}
SHARD=${SHARD:-8}
EPOCHS=${EPOCHS:-60}
STEPS=${STEPS:-100}
BATCH=${BATCH:-16}
JOBS=${JOBS:-$(nproc)}
SIZE=${SIZE:-"64 256 256"}  # z y x voxels of every simulated tomogram
if [ "$TASK" = segment ]; then PATCH=${PATCH:-128}; else PATCH=${PATCH:-48}; BATCH=${BATCH_DETECT:-8}; fi
mkdir -p "$DATA" "$(dirname "$OUT")"

shards=()
for ((first = 1000; first < 1000 + N_TRAIN; first += SHARD)); do shards+=("train_$first"); done
generate() {  # NAME FIRST N
  local dir="$DATA/$1"
  if [ -f "$dir/manifest.json" ] && "$PY" -c "import json,sys; sys.exit(0 if len(json.load(open('$dir/manifest.json'))['tomograms']) == $3 else 1)"; then
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$DATA/logs"
  OMP_NUM_THREADS=1 "$TOMOLENS" simulate-dataset --out "$dir" --n "$3" --first-seed "$2" --size-z "$SZ" --size-y "$SY" \
    --size-x "$SX" >"$DATA/logs/$1.log" 2>&1
}
export -f generate
TOMOLENS=${TOMOLENS:-$(dirname "$PY")/tomolens}
read -r SZ SY SX <<<"$SIZE"
export PY DATA TOMOLENS SZ SY SX
{
  for s in "${shards[@]}"; do first=${s#train_}; echo "$s $first $(( N_TRAIN - (first - 1000) < SHARD ? N_TRAIN - (first - 1000) : SHARD ))"; done
  echo "val_8000 8000 $N_VAL"
} | xargs -P "$JOBS" -L 1 bash -c 'generate "$0" "$1" "$2"'

DEVICE=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
RESUME=()
# a checkpoint committed by an earlier session (checkpoints/NAME.ckpt) continues when there is none of this run
COMMITTED="checkpoints/$(basename "$OUT").ckpt"
if [ ! -f "$OUT.ckpt" ] && [ -f "$COMMITTED" ]; then cp "$COMMITTED" "$OUT.ckpt"; fi
[ -f "$OUT.ckpt" ] && RESUME=(--resume)
if [ "$TASK" = segment ]; then
  MODEL_ARGS=(--segment-model 2d --segment-context 4 --depth 3 --base-channels 16 --learning-rate 2e-3)
else
  MODEL_ARGS=(--depth 2 --base-channels 16 --learning-rate 1e-3)
fi
"$TOMOLENS" train --task "$TASK" \
  --domain-data $(printf "$DATA/%s " "${shards[@]}") --domain-val "$DATA/val_8000" \
  --sim-voxel-size-A 10 "${MODEL_ARGS[@]}" \
  --epochs "$EPOCHS" --steps-per-epoch "$STEPS" --batch-size "$BATCH" --patch "$PATCH" \
  --patience 1000 --val-patches 64 --device "$DEVICE" --seed 0 --out "$OUT" --checkpoint "$OUT.ckpt" "${RESUME[@]}"
