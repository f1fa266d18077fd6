#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a loopback port, for tests and load tests.
#
#   scripts/scratch_postgres.sh start DIR PORT   # initdb DIR (a new folder), start; prints the URL
#   scripts/scratch_postgres.sh stop DIR
#
# Uses the newest /usr/lib/postgresql/*/bin (Debian's postgresql package). As root the server
# runs as the postgres user; trust authentication, user nci, database postgres.
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n 2,8p "$0"; exit 2; }
cmd=$1 dir=$2
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -n "$PGBIN" ]] || { echo "no PostgreSQL server binaries under /usr/lib/postgresql" >&2; exit 1; }
if [[ "$(id -u)" == 0 ]]; then as=(su postgres -c); else as=(bash -c); fi
case $cmd in
  start)
    port=${3:?the port}
    mkdir -p "$dir"
    if [[ "$(id -u)" == 0 ]]; then  # postgres must reach the folder and own the cluster
      chmod 755 "$(dirname "$dir")" && chown postgres "$dir"
    fi
    "${as[@]}" "$PGBIN/initdb -D $dir -A trust -U nci" >/dev/null
    "${as[@]}" "$PGBIN/pg_ctl -D $dir -l $dir/log -w -o '-p $port -k /tmp -c listen_addresses=127.0.0.1' start" >/dev/null
    echo "postgresql://nci@127.0.0.1:$port/postgres"
    ;;
  stop) "${as[@]}" "$PGBIN/pg_ctl -D $dir -m fast stop" >/dev/null ;;
  *) echo "unknown command $cmd (start or stop)" >&2; exit 2 ;;
esac
