#!/usr/bin/env bash
# The audit log's cost, in one run on this machine: pgbench select-only
# through esq with the audit log on (hash chain, group commit, fsync before
# every ReadyForQuery) against esq with `audit.enabled = false`, both over
# the same PostgreSQL, interleaved A/B/A/B, -M prepared and -M simple.
# The audit files are written under target/ (a real disk, not tmpfs).
# Starts its own throwaway PostgreSQL (scale 10) and release builds of esq.
# Never part of the test suite.
#   bench/audit_overhead.sh [seconds per run, default 10] [clients, default 8]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh

SECONDS_PER_RUN=${1:-10}
CLIENTS=${2:-8}

ensure_packages pg:postgresql pgbench:postgresql curl:curl runuser:util-linux
say "building esq (release)"
cargo build --release --quiet --bin esq
ESQ=$PWD/target/release/esq

WORK=$(mktemp -d /tmp/esq-audit-bench.XXXXXX)
AUDIT_DIR=$PWD/target/bench-audit.$$
mkdir -p "$AUDIT_DIR"
pg_owner "$WORK"
PGPORT=$(free_port)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  pg_stop "$WORK/pg"
  rm -rf "$WORK" "$AUDIT_DIR"
}
trap cleanup EXIT

say "starting PostgreSQL on 127.0.0.1:$PGPORT"
pg_start "$WORK/pg" "$PGPORT" max_connections=200 shared_buffers=256MB
pg_bench_db "$PGPORT"
mkdir -p "$WORK/catalog"
cp catalog/*.yaml bench/catalog/*.yaml "$WORK/catalog/"

# start_esq NAME ENABLED -> sets PG_<NAME>, HTTP_<NAME>, METRICS_<NAME>, TICKET_<NAME>
start_esq() {
  local name=$1 enabled=$2 pg http metrics ticket
  pg=$(free_port); http=$(free_port); metrics=$(free_port)
  ESQ_UPSTREAM__URL="postgres://esq_bench@127.0.0.1:$PGPORT/bench" \
  ESQ_UPSTREAM__PASSWORD=bench \
  ESQ_UPSTREAM__POOL_SIZE=$((CLIENTS + 8)) \
  ESQ_PG__MAX_SESSIONS_PER_USER=$((CLIENTS + 8)) \
  ESQ_SERVER__PG_LISTEN=127.0.0.1:$pg \
  ESQ_SERVER__HTTP_LISTEN=127.0.0.1:$http \
  ESQ_METRICS__LISTEN=127.0.0.1:$metrics \
  ESQ_CATALOG__DIR="$WORK/catalog" \
  ESQ_SENTINEL__RULES="$BENCH_SENTINEL_RULES" \
  ESQ_AUDIT__PATH="$AUDIT_DIR/$name/audit.jsonl" \
  ESQ_AUDIT__ENABLED=$enabled \
  ESQ_LOG__FILTER=warn \
    "$ESQ" --config config/esq.toml serve 2>"$WORK/esq-$name.log" &
  PIDS+=($!)
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$http/healthz" >/dev/null && break; sleep 0.2; done
  ticket=$(curl -fs -X POST "http://127.0.0.1:$http/api/esq/ticket" \
    -H "Authorization: Bearer demo-journalist-token" -H 'Content-Type: application/json' \
    -d '{"dataset":"pgbench_accounts","purpose":"benchmark","fields":["aid","abalance"],"ttl":"60m"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["ticket"])')
  printf -v "PG_$name" '%s' "$pg"
  printf -v "HTTP_$name" '%s' "$http"
  printf -v "METRICS_$name" '%s' "$metrics"
  printf -v "TICKET_$name" '%s' "$ticket"
}
say "starting esq with the audit log on, and with it off"
start_esq on true
start_esq off false
grep -q "AUDIT LOG IS DISABLED" "$WORK/esq-off.log" || say "warning: the disabled audit log was not logged"
curl -fs "http://127.0.0.1:$METRICS_off/metrics" | grep -q '^esq_audit_enabled 0' \
  || die "esq_audit_enabled does not show the disabled audit log"

run_pgbench() { # port ticket mode
  PGOPTIONS="-c esq.ticket=$2" pgbench -n -s 10 -f bench/pgbench_select_only.sql \
    -M "$3" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" \
    "postgresql://journalist:journalist@127.0.0.1:$1/bench?sslmode=disable" 2>/dev/null \
    | awk '/^latency average/{lat=$4} /^tps/{tps=$3} END{printf "%s %s\n", tps, lat}'
}

echo
echo "pgbench select-only through esq, scale 10, $CLIENTS clients, ${SECONDS_PER_RUN}s per run, $(nproc) cores"
printf '%-9s %-5s %12s %10s %12s %10s %7s\n' mode round off_tps lat_ms on_tps lat_ms ratio
for mode in prepared simple; do
  for round in 1 2; do
    read -r off_tps off_lat < <(run_pgbench "$PG_off" "$TICKET_off" "$mode")
    read -r on_tps on_lat < <(run_pgbench "$PG_on" "$TICKET_on" "$mode")
    ratio=$(python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$on_tps" "$off_tps")
    printf '%-9s %-5s %12.0f %10s %12.0f %10s %7s\n' "$mode" "$round" "$off_tps" "$off_lat" "$on_tps" "$on_lat" "$ratio"
  done
done

echo
"$ESQ" audit verify "$AUDIT_DIR"/on/audit*.jsonl
records=$(cat "$AUDIT_DIR"/on/audit*.jsonl | wc -l)
bytes=$(cat "$AUDIT_DIR"/on/audit*.jsonl | wc -c)
echo "audit on: $records records, $((bytes / (records > 0 ? records : 1))) bytes per record"
curl -fs "http://127.0.0.1:$METRICS_on/metrics" | python3 -c '
import sys
m = {}
for line in sys.stdin:
    if line.startswith("esq_audit_"):
        name, value = line.rsplit(" ", 1)
        m[name] = float(value)
batches = m.get("esq_audit_write_seconds_count", 0)
total = m.get("esq_audit_write_seconds_sum", 0)
records = m.get("esq_audit_records_total", 0)
if batches:
    print(f"group commit: {records:.0f} records in {batches:.0f} batches "
          f"({records / batches:.1f} per fsync), {1000 * total / batches:.2f} ms per write+fsync")
'
