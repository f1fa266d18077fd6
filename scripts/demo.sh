#!/usr/bin/env bash
# The main job: build a SQuAD (v1.1 dev as passage retrieval) index end to end on the CPU, then
# serve it with the search page. Stages whose output already has a manifest are skipped, so a
# second run goes straight to serving. Reads the raw data from $NCI_DATASETS when set, else
# downloads it from its public location.
#
# Knobs (environment): NCI_WORK (default runs/demo), DEMO_TRAIN_MINUTES (default 15),
# DEMO_HOST / DEMO_PORT (default 127.0.0.1:8000), DEMO_SERVE=0 to stop after building.
set -euo pipefail
WORK="${NCI_WORK:-runs/demo}"
TRAIN_MINUTES="${DEMO_TRAIN_MINUTES:-15}"
HOST="${DEMO_HOST:-127.0.0.1}"
PORT="${DEMO_PORT:-8000}"
mkdir -p "$WORK"

stage() {  # stage OUT_DIR COMMAND...
  local out="$1"; shift
  if [[ -f "$out/manifest.json" ]]; then
    echo "== skip $(basename "$out"): $out/manifest.json exists"
  else
    echo "== $*"
    "$@"
  fi
}

start=$(date +%s)
stage "$WORK/data"  nci data prepare squad --out "$WORK/data"
stage "$WORK/emb"   nci embed --data "$WORK/data" --out "$WORK/emb"
stage "$WORK/ids"   nci ids build --embeddings "$WORK/emb" --out "$WORK/ids"
stage "$WORK/daq"   nci querygen daq --data "$WORK/data" --out "$WORK/daq"
# The CPU recipe: frozen encoder with cached token states, PAWA decoder with the centroid prior.
stage "$WORK/model" nci train --data "$WORK/data" --ids "$WORK/ids" --queries "$WORK/daq" \
  --out "$WORK/model" --centroid-prior --max-minutes "$TRAIN_MINUTES"
stage "$WORK/index" nci index build --data "$WORK/data" --embeddings "$WORK/emb" --ids "$WORK/ids" \
  --model "$WORK/model" --out "$WORK/index"
echo "== index built in $(( $(date +%s) - start )) s: $WORK/index"
if [[ "${DEMO_SERVE:-1}" == "1" ]]; then
  echo "== serving: open http://$HOST:$PORT/ (API docs at /docs; Ctrl-C stops)"
  exec nci serve --index "$WORK/index" --host "$HOST" --port "$PORT"
fi
