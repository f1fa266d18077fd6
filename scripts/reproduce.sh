#!/usr/bin/env bash
# Reproduce the README's results: raw files in $NCI_DATASETS -> prepared data -> embeddings ->
# semantic ids -> pseudo-queries -> NCI training -> index -> benchmark, for SQuAD, SciFact and
# Cranfield. A stage whose output already has a manifest.json is skipped, so an interrupted run
# picks up where it stopped. Output: $NCI_WORK (default runs/) and results/<dataset>/.
#
#   NCI_DATASETS=/path/to/raw/data scripts/reproduce.sh [squad scifact cranfield]
#
# Knobs (environment): TRAIN_MINUTES (CPU training budget per dataset, default 40),
# D2Q_N (generated queries per document, default 10), BENCH_ARGS (extra `nci bench` flags).
set -euo pipefail
WORK="${NCI_WORK:-runs}"
RESULTS="${NCI_RESULTS:-results}"
TRAIN_MINUTES="${TRAIN_MINUTES:-40}"
D2Q_N="${D2Q_N:-10}"
DATASETS=("${@:-squad scifact cranfield}")
read -r -a DATASETS <<< "${DATASETS[*]}"

stage() {  # stage OUT_DIR COMMAND...  (skipped when OUT_DIR has a manifest.json or results.json)
  local out="$1"; shift
  if [[ -f "$out/manifest.json" || -f "$out/results.json" ]]; then
    echo "== skip: $out exists"
  else
    echo "== $*"
    local t0; t0=$(date +%s)
    "$@"
    echo "== done in $(( $(date +%s) - t0 )) s"
  fi
}

start=$(date +%s)
# One query generator, trained on SQuAD's training questions, serves every corpus: the zero-shot
# Cranfield has no training queries of its own.
stage "$WORK/squad/data" nci data prepare squad --out "$WORK/squad/data"
stage "$WORK/d2q-model" nci querygen train --data "$WORK/squad/data" --out "$WORK/d2q-model"

for name in "${DATASETS[@]}"; do
  w="$WORK/$name"
  stage "$w/data" nci data prepare "$name" --out "$w/data"
  stage "$w/emb" nci embed --data "$w/data" --out "$w/emb"
  stage "$w/ids" nci ids build --embeddings "$w/emb" --out "$w/ids"
  stage "$w/daq" nci querygen daq --data "$w/data" --out "$w/daq"
  stage "$w/d2q" nci querygen generate --data "$w/data" --model "$WORK/d2q-model" --n "$D2Q_N" --out "$w/d2q"
  stage "$w/model" nci train --data "$w/data" --ids "$w/ids" --queries "$w/daq" "$w/d2q" \
    --out "$w/model" --max-minutes "$TRAIN_MINUTES"
  stage "$w/index" nci index build --data "$w/data" --embeddings "$w/emb" --ids "$w/ids" \
    --model "$w/model" --out "$w/index"
  # shellcheck disable=SC2086
  stage "$RESULTS/$name" nci bench --data "$w/data" --index "$w/index" --out "$RESULTS/$name" ${BENCH_ARGS:-}
done
echo "== reproduce finished in $(( $(date +%s) - start )) s; tables in $RESULTS/*/results.md"
