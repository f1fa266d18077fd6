#!/usr/bin/env bash
# The main job: prepare SQuAD (v1.1 dev as passage retrieval), build an index from it with one
# `nci build` (embed, ids, doc-as-query, train, index with fusion; the recipe chosen from the
# corpus by nci/recipe.py and written to $NCI_WORK/build.json), then serve it with the search
# page. Every stage whose output already has a manifest with the same config is skipped, so a
# second run goes straight to serving and an interrupted one picks up where it stopped. Reads the
# raw data from $NCI_DATASETS when set, else downloads it from its public location.
#
# Knobs (environment): NCI_WORK (default runs/demo), DEMO_MINUTES (wall time of the whole build;
# default 25, where NCI passes dense retrieval on SQuAD; nci build's own default for SQuAD, 15
# minutes, leaves it below), DEMO_TRAIN_MINUTES (sets the training budget instead of the
# recipe's), DEMO_HOST / DEMO_PORT (default 127.0.0.1:8000), DEMO_SERVE=0 to stop after building.
set -euo pipefail
WORK="${NCI_WORK:-runs/demo}"
HOST="${DEMO_HOST:-127.0.0.1}"
PORT="${DEMO_PORT:-8000}"
mkdir -p "$WORK"

start=$(date +%s)
if [[ -f "$WORK/data/manifest.json" ]]; then
  echo "== skip data: $WORK/data/manifest.json exists"
else
  echo "== nci data prepare squad --out $WORK/data"
  nci data prepare squad --out "$WORK/data"
fi
build=(nci build --data "$WORK/data" --out "$WORK")
build+=(--minutes "${DEMO_MINUTES:-25}")
if [[ -n "${DEMO_TRAIN_MINUTES:-}" ]]; then build+=(--train-minutes "$DEMO_TRAIN_MINUTES"); fi
echo "== ${build[*]}"
"${build[@]}"
echo "== index built in $(( $(date +%s) - start )) s: $WORK/index (recipe and figures: $WORK/build.json)"
if [[ "${DEMO_SERVE:-1}" == "1" ]]; then
  echo "== serving: open http://$HOST:$PORT/ (API docs at /docs; Ctrl-C stops)"
  exec nci serve --index "$WORK/index" --host "$HOST" --port "$PORT"
fi
