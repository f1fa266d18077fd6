#!/usr/bin/env bash
# The main job: prepare SQuAD (v1.1 dev as passage retrieval) and run the pipeline on it.
# Stages whose output already has a manifest are skipped, so a second run is quick.
# Reads the raw data from $NCI_DATASETS when set, else downloads it from its public location.
set -euo pipefail
WORK="${NCI_WORK:-runs/squad}"
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
stage "$WORK/data" nci data prepare squad --out "$WORK/data"
stage "$WORK/emb"  nci embed --data "$WORK/data" --out "$WORK/emb"
stage "$WORK/ids"  nci ids build --embeddings "$WORK/emb" --out "$WORK/ids"
echo "== demo pipeline finished in $(( $(date +%s) - start )) s; artifacts in $WORK"
