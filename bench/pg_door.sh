#!/usr/bin/env bash
# End-to-end figures of the PostgreSQL door, in one run on this machine:
#   - pgbench select-only TPS and latency, direct vs through esq, with
#     -M simple / extended / prepared, interleaved A/B/A/B;
#   - esq's RSS per idle client session.
# Starts its own throwaway PostgreSQL (scale 10) and a release build of esq
# (tickets come from the HTTP door). Never part of the test suite.
#   bench/pg_door.sh [seconds per run, default 10] [clients, default 8]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh

SECONDS_PER_RUN=${1:-10}
CLIENTS=${2:-8}
IDLE_SESSIONS=${IDLE_SESSIONS:-200}

ensure_packages pg:postgresql pgbench:postgresql curl:curl runuser:util-linux
say "building esq (release)"
cargo build --release --quiet --bin esq
ESQ=$PWD/target/release/esq

WORK=$(mktemp -d /tmp/esq-bench.XXXXXX)
pg_owner "$WORK"
PGPORT=$(free_port); PGPORT_ESQ=$(free_port); HTTP_PORT=$(free_port)
cleanup() {
  [ -n "${ESQ_PID:-}" ] && kill "$ESQ_PID" 2>/dev/null || true
  pg_stop "$WORK/pg"
  rm -rf "$WORK"
}
trap cleanup EXIT

say "starting PostgreSQL on 127.0.0.1:$PGPORT"
pg_start "$WORK/pg" "$PGPORT" max_connections=400 shared_buffers=256MB
pg_bench_db "$PGPORT"

mkdir -p "$WORK/catalog"
cp catalog/*.yaml bench/catalog/*.yaml "$WORK/catalog/"
say "starting esq on 127.0.0.1:$PGPORT_ESQ (HTTP $HTTP_PORT)"
ESQ_UPSTREAM__URL="postgres://esq_bench@127.0.0.1:$PGPORT/bench" \
ESQ_UPSTREAM__PASSWORD=bench \
ESQ_UPSTREAM__POOL_SIZE=$((IDLE_SESSIONS + CLIENTS + 8)) \
ESQ_SERVER__PG_LISTEN=127.0.0.1:$PGPORT_ESQ \
ESQ_PG__MAX_SESSIONS_PER_USER=$((IDLE_SESSIONS + CLIENTS + 8)) \
ESQ_SERVER__HTTP_LISTEN=127.0.0.1:$HTTP_PORT \
ESQ_CATALOG__DIR="$WORK/catalog" \
ESQ_SENTINEL__RULES="$BENCH_SENTINEL_RULES" \
ESQ_AUDIT__PATH="$WORK/audit.jsonl" \
ESQ_LOG__FILTER=warn \
  "$ESQ" --config config/esq.toml serve 2>"$WORK/esq.log" &
ESQ_PID=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break; sleep 0.2; done

TICKET=$(curl -fs -X POST "http://127.0.0.1:$HTTP_PORT/api/esq/ticket" \
  -H "Authorization: Bearer demo-journalist-token" -H 'Content-Type: application/json' \
  -d '{"dataset":"pgbench_accounts","purpose":"benchmark","fields":["aid","abalance"],"ttl":"60m"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["ticket"])')

DIRECT="postgresql://postgres@127.0.0.1:$PGPORT/bench"
THROUGH="postgresql://journalist:journalist@127.0.0.1:$PGPORT_ESQ/bench?sslmode=disable"
run_pgbench() { # url mode
  PGOPTIONS="-c esq.ticket=$TICKET" pgbench -n -s 10 -f bench/pgbench_select_only.sql \
    -M "$2" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" "$1" 2>/dev/null \
    | awk '/^latency average/{lat=$4} /^tps/{tps=$3} END{printf "%s %s\n", tps, lat}'
}
# The ticket option means nothing to PostgreSQL itself: strip it there.
run_direct() { PGOPTIONS= pgbench -n -s 10 -f bench/pgbench_select_only.sql \
    -M "$1" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" "$DIRECT" 2>/dev/null \
    | awk '/^latency average/{lat=$4} /^tps/{tps=$3} END{printf "%s %s\n", tps, lat}'; }

echo
echo "pgbench select-only, scale 10, $CLIENTS clients, ${SECONDS_PER_RUN}s per run, $(nproc) cores"
printf '%-9s %-5s %12s %10s %12s %10s %7s\n' mode round direct_tps lat_ms esq_tps lat_ms ratio
for mode in simple extended prepared; do
  for round in 1 2; do
    read -r d_tps d_lat < <(run_direct "$mode")
    read -r e_tps e_lat < <(run_pgbench "$THROUGH" "$mode")
    ratio=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$e_tps" "$d_tps")
    printf '%-9s %-5s %12.0f %10s %12.0f %10s %7s\n' "$mode" "$round" "$d_tps" "$d_lat" "$e_tps" "$e_lat" "$ratio"
  done
done

rss() { awk '/VmRSS/{print $2}' "/proc/$ESQ_PID/status"; }
before=$(rss)
after=$(python3 - "$IDLE_SESSIONS" "$PGPORT_ESQ" "$TICKET" "$ESQ_PID" <<'PY'
import sys, time, psycopg
n, port, ticket, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
conns = [psycopg.connect(f"host=127.0.0.1 port={port} dbname=bench user=ticket password={ticket} sslmode=disable") for _ in range(n)]
time.sleep(1)
rss = int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")))
open("/dev/stdout", "w").write(f"{rss}\n")
for c in conns: c.close()
PY
)
echo
echo "idle sessions: $IDLE_SESSIONS; esq RSS $before KiB before, $after KiB with them open:" \
  "$(( (after - before) / IDLE_SESSIONS )) KiB per idle session (each also holds one upstream connection)"
