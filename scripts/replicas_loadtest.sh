#!/usr/bin/env bash
# Load test through one address: nginx round robin over two `nci serve` replicas that share one
# index directory and one PostgreSQL database, beside the same proxy over one replica.
#
#   NCI_DATABASE_URL=postgresql://... scripts/replicas_loadtest.sh INDEX DATA [OUT]
#
# Starts the replicas on loopback ports 8101 and 8102 and nginx on 8180 (a throwaway
# configuration in OUT, the same settings as docker/nginx.conf), runs scripts/loadtest.py through
# the proxy with one upstream and then with two, writes OUT/one.json and OUT/two.json and prints
# both tables. Needs nginx on PATH (Debian: apt-get install nginx-light). LOADTEST_ARGS adds
# options of scripts/loadtest.py (default: --requests 1000 --concurrency 16 --methods nci,dense,bm25).
# NCI_THREADS (default 1) sets each replica's torch threads.
set -euo pipefail
index=${1:?usage: replicas_loadtest.sh INDEX DATA [OUT]}
data=${2:?usage: replicas_loadtest.sh INDEX DATA [OUT]}
out=${3:-results/replicas}
: "${NCI_DATABASE_URL:?set NCI_DATABASE_URL to the PostgreSQL database the replicas share}"
command -v nginx >/dev/null || { echo "nginx is not on PATH (apt-get install nginx-light)" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$here/../.venv/bin/python}
mkdir -p "$out"
out=$(cd "$out" && pwd)
read -r -a extra <<<"${LOADTEST_ARGS:---requests 1000 --concurrency 16 --methods nci,dense,bm25}"
pids=()
cleanup() {
  [ -f "$out/nginx.pid" ] && kill "$(cat "$out/nginx.pid")" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

for port in 8101 8102; do
  NCI_THREADS=${NCI_THREADS:-1} "$python" -m nci.cli serve --index "$index" --host 127.0.0.1 --port "$port" \
    >"$out/replica-$port.log" 2>&1 &
  pids+=($!)
done
for port in 8101 8102; do
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.5
  done
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { echo "replica on $port did not get ready" >&2; exit 1; }
done

proxy() {  # proxy NAME UPSTREAM_PORT...
  local conf="$out/nginx-$1.conf" servers=""
  shift
  for port in "$@"; do servers+="server 127.0.0.1:$port max_fails=1 fail_timeout=10s; "; done
  cat >"$conf" <<EOF
worker_processes 1;
pid $out/nginx.pid;
error_log $out/nginx-error.log;
events {}
http {
    access_log off;
    client_body_temp_path $out/nginx-body;
    proxy_temp_path $out/nginx-proxy;
    upstream nci { $servers keepalive 32; }
    server {
        listen 127.0.0.1:8180;
        client_max_body_size 2m;
        location / {
            proxy_pass http://nci;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_read_timeout 75s;
            proxy_next_upstream error timeout http_502 http_503;
        }
    }
}
EOF
  [ -f "$out/nginx.pid" ] && { kill "$(cat "$out/nginx.pid")" 2>/dev/null || true; sleep 1; }
  nginx -c "$conf" -p "$out"
  for _ in $(seq 50); do curl -fs http://127.0.0.1:8180/readyz >/dev/null && return; sleep 0.2; done
  echo "nginx did not answer on 8180" >&2
  exit 1
}

proxy one 8101
echo "== through the proxy, one replica"
"$python" "$here/loadtest.py" --url http://127.0.0.1:8180 --data "$data" --json "$out/one.json" "${extra[@]}"
proxy two 8101 8102
echo "== through the proxy, two replicas"
"$python" "$here/loadtest.py" --url http://127.0.0.1:8180 --data "$data" --json "$out/two.json" "${extra[@]}"
