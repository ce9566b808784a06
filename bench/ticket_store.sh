#!/usr/bin/env bash
# The shared ticket store's cost and the sentinel's detection delay, in one
# run on this machine:
#   - pgbench select-only through esq with the memory store, the Redis store
#     (validation cache 1 s, the default) and the Redis store checking every
#     statement (validation cache 0 s), -M simple and -M prepared,
#     interleaved; ratios to the memory store;
#   - the breach sentinel's detection delay: a client runs statements under
#     one ticket as fast as it can on one replica; the time from the
#     statement that reaches the limit to the webhook's alert, and to the
#     first refused statement.
# Starts its own PostgreSQL (scale 10), redis-server and release esq
# processes (audit log off unless AUDIT=true). Never part of the test suite.
#   bench/ticket_store.sh [seconds per run, default 10] [clients, default 8]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh

SECONDS_PER_RUN=${1:-10}
CLIENTS=${2:-8}
SENTINEL_LIMIT=${SENTINEL_LIMIT:-5000}
# The audit log's fsync per answer would hide the store's cost: off by
# default here (AUDIT=true to include it; bench/audit_overhead.sh measures it).
AUDIT=${AUDIT:-false}

ensure_packages pg:postgresql pgbench:postgresql curl:curl runuser:util-linux redis-server:redis-server
python3 -c 'import psycopg' 2>/dev/null || die "python3 psycopg missing: python3 -m pip install -r tests/drivers/requirements.txt"
say "building esq (release)"
cargo build --release --quiet --bin esq
ESQ=$PWD/target/release/esq

WORK=$(mktemp -d /tmp/esq-bench.XXXXXX)
pg_owner "$WORK"
PGPORT=$(free_port); REDIS_PORT=$(free_port)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  pg_stop "$WORK/pg"
  rm -rf "$WORK"
}
trap cleanup EXIT

say "starting PostgreSQL on 127.0.0.1:$PGPORT and redis-server on 127.0.0.1:$REDIS_PORT"
pg_start "$WORK/pg" "$PGPORT" max_connections=200 shared_buffers=256MB
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
PIDS+=($!)
pg_bench_db "$PGPORT"
mkdir -p "$WORK/catalog"
cp catalog/*.yaml bench/catalog/*.yaml "$WORK/catalog/"

HIGH_LIMITS=$BENCH_SENTINEL_RULES

start_esq() { # name store validation_cache rules [webhook]
  local name=$1 pg_port http_port
  pg_port=$(free_port); http_port=$(free_port)
  ESQ_UPSTREAM__URL="postgres://esq_bench@127.0.0.1:$PGPORT/bench" \
  ESQ_UPSTREAM__PASSWORD=bench \
  ESQ_UPSTREAM__POOL_SIZE=$((CLIENTS + 8)) \
  ESQ_PG__MAX_SESSIONS_PER_USER=$((CLIENTS + 8)) \
  ESQ_SERVER__PG_LISTEN=127.0.0.1:$pg_port \
  ESQ_SERVER__HTTP_LISTEN=127.0.0.1:$http_port \
  ESQ_METRICS__LISTEN=127.0.0.1:0 \
  ESQ_CATALOG__DIR="$WORK/catalog" \
  ESQ_AUDIT__PATH="$WORK/$name-audit.jsonl" \
  ESQ_TICKETS__STORE="$2" \
  ESQ_TICKETS__VALIDATION_CACHE="$3" \
  ESQ_SENTINEL__RULES="$4" \
  ESQ_AUDIT__ENABLED="$AUDIT" \
  ESQ_LOG__FILTER=warn \
    env ${5:+ESQ_SENTINEL__WEBHOOK="$5"} "$ESQ" --config config/esq.toml serve 2>"$WORK/$name.log" &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null || die "esq ($name) did not start: $(tail -5 "$WORK/$name.log")"
  eval "${name}_PG=$pg_port; ${name}_HTTP=$http_port"
}
ticket() { # http_port
  curl -fs -X POST "http://127.0.0.1:$1/api/esq/ticket" \
    -H "Authorization: Bearer demo-journalist-token" -H 'Content-Type: application/json' \
    -d '{"dataset":"pgbench_accounts","purpose":"benchmark","fields":["aid","abalance"],"ttl":"60m"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["ticket"])'
}

REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
start_esq memory memory 1s "$HIGH_LIMITS"
start_esq redis "$REDIS_URL" 1s "$HIGH_LIMITS"
start_esq redis0 "$REDIS_URL" 0s "$HIGH_LIMITS"

run_pgbench() { # pg_port ticket mode
  PGOPTIONS="-c esq.ticket=$2" pgbench -n -s 10 -f bench/pgbench_select_only.sql \
    -M "$3" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" \
    "postgresql://journalist:journalist@127.0.0.1:$1/bench?sslmode=disable" 2>/dev/null \
    | awk '/^latency average/{lat=$4} /^tps/{tps=$3} END{printf "%s %s\n", tps, lat}'
}

echo
echo "pgbench select-only through esq, scale 10, $CLIENTS clients, ${SECONDS_PER_RUN}s per run, $(nproc) cores"
printf '%-9s %-5s %14s %14s %10s %16s %10s\n' mode round memory_tps redis_1s_tps ratio redis_0s_tps ratio
for mode in simple prepared; do
  for round in 1 2; do
    read -r m_tps _ < <(run_pgbench "$memory_PG" "$(ticket "$memory_HTTP")" "$mode")
    read -r r_tps _ < <(run_pgbench "$redis_PG" "$(ticket "$redis_HTTP")" "$mode")
    read -r z_tps _ < <(run_pgbench "$redis0_PG" "$(ticket "$redis0_HTTP")" "$mode")
    ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$1" "$2"; }
    printf '%-9s %-5s %14.0f %14.0f %10s %16.0f %10s\n' "$mode" "$round" "$m_tps" "$r_tps" \
      "$(ratio "$r_tps" "$m_tps")" "$z_tps" "$(ratio "$z_tps" "$m_tps")"
  done
done

# The sentinel: a webhook receiver that notes when each alert arrives, one
# replica on Redis with the limit at $SENTINEL_LIMIT uses in 30 s.
HOOK_PORT=$(free_port)
python3 - "$HOOK_PORT" "$WORK/alerts" <<'PY' &
import http.server, sys, time
port, out = int(sys.argv[1]), sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with open(out, "a") as f:
            f.write(f"{time.time()}\n")
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
PY
PIDS+=($!)
start_esq sentinel "$REDIS_URL" 1s "[{name=\"ticket_volume\", measure=\"uses\", limit=$SENTINEL_LIMIT, window=\"30s\"}]" \
  "http://127.0.0.1:$HOOK_PORT/alert"
echo
python3 - "$sentinel_PG" "$(ticket "$sentinel_HTTP")" "$SENTINEL_LIMIT" "$WORK/alerts" <<'PY'
import os, sys, time, psycopg
port, ticket, limit, alerts = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
conn = psycopg.connect(f"host=127.0.0.1 port={port} dbname=bench user=ticket password={ticket} sslmode=disable", autocommit=True)
sent_at = []
refused_at = None
started = time.time()
while time.time() - started < 30:
    sent_at.append(time.time())
    try:
        conn.execute("SELECT abalance FROM pgbench_accounts WHERE aid = %s", (len(sent_at) % 100000 + 1,), prepare=True).fetchall()
    except psycopg.Error as e:
        if e.sqlstate == "28000":
            refused_at = time.time()
            break
        raise
deadline = time.time() + 10
while not (os.path.exists(alerts) and open(alerts).read().strip()) and time.time() < deadline:
    time.sleep(0.01)
alert_at = float(open(alerts).read().split()[0]) if os.path.exists(alerts) else None
reached = sent_at[limit - 1] if len(sent_at) >= limit else None
rate = len(sent_at) / ((refused_at or time.time()) - started)
print(f"sentinel: limit {limit} uses in 30 s, one client at {rate:,.0f} statements/s, flush interval 200 ms, Redis store")
if reached and alert_at:
    print(f"  webhook alert {1000 * (alert_at - reached):.0f} ms after the statement that reached the limit")
if reached and refused_at:
    print(f"  first refused statement {1000 * (refused_at - reached):.0f} ms after it "
          f"({len(sent_at) - limit} statements ran past the limit; an open connection trusts its last check for up to 1 s)")
PY
