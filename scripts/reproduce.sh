#!/usr/bin/env bash
# Reproduce the README's results: raw files in $NCI_DATASETS -> prepared data -> embeddings ->
# semantic ids -> pseudo-queries -> NCI training -> index -> benchmark, for SQuAD, SciFact and
# Cranfield. A stage whose output already has a manifest.json (or results.json) is skipped, so an
# interrupted run picks up where it stopped. Output: $NCI_WORK (default runs/) and
# $NCI_RESULTS/<dataset>/ (default results/).
#
#   NCI_DATASETS=/path/to/raw/data scripts/reproduce.sh [squad scifact cranfield]
#
# Knobs (environment): THREADS (torch threads for training and the benchmark, default 2),
# BENCH_ARGS (extra `nci bench` flags). The recipes are the README's (CPU, 2 cores), all with the
# centroid prior and label smoothing 0.1:
#   squad     ids with k=50 clusters per level and leaves of up to 50; doc-as-query (64- and
#             16-word windows), top two encoder layers trained, no R-drop, 45 min
#   scifact   default ids (k=30, leaves of up to 30); doc-as-query (64-word windows), frozen
#             encoder, no R-drop, 25 min
#   cranfield default ids; doc-as-query (64- and 16-word windows), frozen encoder, R-drop 0.15
#             (the default), 15 min
set -euo pipefail
WORK="${NCI_WORK:-runs}"
RESULTS="${NCI_RESULTS:-results}"
THREADS="${THREADS:-2}"
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
for name in "${DATASETS[@]}"; do
  w="$WORK/$name"
  case "$name" in
    squad) ids=(--k 50 --leaf-size 50); queries=("$w/daq" "$w/daq16")
      train=(--encoder-trainable-layers 2 --rdrop-alpha 0 --max-minutes 45); bench=(--pq-rerank 4) ;;
    scifact) ids=(); queries=("$w/daq"); train=(--rdrop-alpha 0 --max-minutes 25)
      bench=(--decode-queries 32 --latency-queries 100) ;;
    cranfield) ids=(); queries=("$w/daq" "$w/daq16"); train=(--max-minutes 15)
      bench=(--decode-queries 32 --latency-queries 100) ;;
    *) echo "unknown dataset '$name' (squad, scifact, cranfield)" >&2; exit 2 ;;
  esac
  stage "$w/data" nci data prepare "$name" --out "$w/data"
  stage "$w/emb" nci embed --data "$w/data" --out "$w/emb"
  stage "$w/ids" nci ids build --embeddings "$w/emb" --out "$w/ids" "${ids[@]}"
  stage "$w/daq" nci querygen daq --data "$w/data" --out "$w/daq"
  if [[ " ${queries[*]} " == *" $w/daq16 "* ]]; then
    stage "$w/daq16" nci querygen daq --data "$w/data" --out "$w/daq16" --window 16
  fi
  stage "$w/model" nci train --data "$w/data" --ids "$w/ids" --queries "${queries[@]}" \
    --out "$w/model" --centroid-prior --label-smoothing 0.1 --threads "$THREADS" "${train[@]}"
  stage "$w/index" nci index build --data "$w/data" --embeddings "$w/emb" --ids "$w/ids" \
    --model "$w/model" --out "$w/index"
  # shellcheck disable=SC2086
  stage "$RESULTS/$name" nci bench --data "$w/data" --index "$w/index" --out "$RESULTS/$name" \
    --threads "$THREADS" "${bench[@]}" ${BENCH_ARGS:-}
done
echo "== reproduce finished in $(( $(date +%s) - start )) s; tables in $RESULTS/*/results.md"
