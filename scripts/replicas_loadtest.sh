#!/usr/bin/env bash
# Load test through a reverse proxy: the same load against one replica and against two, each
# replica an `nci serve` over the same read-only index and one PostgreSQL database, nginx in front
# with docker/nginx.conf (its upstream pointed at loopback ports). Prints both tables; writes
# OUT/replicas-1.json and OUT/replicas-2.json.
#
#   scripts/replicas_loadtest.sh INDEX DATA OUT [loadtest.py flags...]
#
# Needs nginx and PostgreSQL's server binaries (Debian: nginx-light postgresql). Uses
# NCI_DATABASE_URL when set; otherwise starts a throwaway PostgreSQL cluster on 127.0.0.1:55440.
# Replica i runs on port 8020+i with NCI_THREADS=1, pinned to core i-1 when the machine has that
# many cores; nginx listens on 127.0.0.1:8080. The load generator runs unpinned beside them.
set -euo pipefail
[[ $# -ge 3 ]] || { sed -n 2,12p "$0"; exit 2; }
INDEX=$1 DATA=$2 OUT=$3; shift 3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/nci-replicas.XXXXXX)
mkdir -p "$OUT"
PIDS=()
stop_servers() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}
cleanup() {
  stop_servers
  if [[ -n "${PGDATA:-}" ]]; then "$ROOT/scripts/scratch_postgres.sh" stop "$PGDATA" 2>/dev/null || true; fi
}
trap cleanup EXIT

if [[ -z "${NCI_DATABASE_URL:-}" ]]; then
  PGDATA=$WORK/pg
  NCI_DATABASE_URL=$("$ROOT/scripts/scratch_postgres.sh" start "$PGDATA" 55440)
  export NCI_DATABASE_URL
fi

wait_ready() {  # wait_ready URL
  for _ in $(seq 600); do
    curl -fs "$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "no answer from $1/readyz after 300 s" >&2
  return 1
}

run() {  # run N: N replicas behind nginx, then the load test through it
  local n=$1 servers="" i
  shift
  for i in $(seq "$n"); do
    local core=$(( (i - 1) % $(nproc) ))
    NCI_THREADS=1 taskset -c "$core" nci serve --index "$INDEX" --host 127.0.0.1 --port $((8020 + i)) \
      >"$WORK/replica$i-of-$n.log" 2>&1 &
    PIDS+=($!)
    servers+="        server 127.0.0.1:$((8020 + i)) max_fails=1 fail_timeout=10s;\n"
  done
  for i in $(seq "$n"); do wait_ready "http://127.0.0.1:$((8020 + i))"; done
  # docker/nginx.conf with its upstream servers replaced and its files kept in $WORK
  mkdir -p "$WORK/nginx$n"
  awk -v servers="$servers" '
    /^ *server replica[0-9]+:/ { if (!done) { printf "%s", servers; done = 1 } next }
    /listen 8080;/ { sub("listen 8080;", "listen 127.0.0.1:8080;") }
    /^events/ { print "pid '"$WORK/nginx$n"'/nginx.pid;\nerror_log '"$WORK/nginx$n"'/error.log;" }
    { print }
    /^http \{/ { print "    access_log off;" }
  ' "$ROOT/docker/nginx.conf" >"$WORK/nginx$n/nginx.conf"
  nginx -p "$WORK/nginx$n" -c "$WORK/nginx$n/nginx.conf" -g 'daemon off;' &
  PIDS+=($!)
  wait_ready "http://127.0.0.1:8080"
  echo "== $n replica(s) behind nginx"
  python "$ROOT/scripts/loadtest.py" --url http://127.0.0.1:8080 --data "$DATA" \
    --json "$OUT/replicas-$n.json" "$@"
  stop_servers
}

run 1 "$@"
run 2 "$@"
