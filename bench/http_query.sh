#!/usr/bin/env bash
# Requests/s for a cached aggregate query through esq's HTTP door, and the
# same (rewritten) statement straight against PostgreSQL as the reference.
#
#   bench/http_query.sh            # 100k sample rows, 16 connections, 10 s
#   ROWS=20000 CONNS=8 SECS=5 bench/http_query.sh
#
# Starts a private PostgreSQL in a temporary directory with the sample data
# and esq's read-only service role, runs a release `esq serve` on it, asks
# for the FOIA ticket over HTTP, then runs `wrk` (POST /api/dta/query
# {"groupBy":"state"}) and `pgbench` (the guard's rewrite of the same
# query, as the service role). Everything is torn down on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh

ROWS=${ROWS:-100000}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
SECS=${SECS:-10}

ensure_rust
ensure_build_packages
ensure_packages pg:postgresql psql:postgresql-client runuser:util-linux wrk:wrk curl:curl

say "building esq (release)"
cargo build --quiet --release --bin esq
ESQ=$PWD/target/release/esq

WORK=$(mktemp -d /tmp/esq-bench-XXXXXX)
chmod 755 "$WORK"
pg_owner "$WORK"
PGDATA=$WORK/pg
PG_PORT=$(free_port)
HTTP_PORT=$(free_port)
ESQ_PID=""
cleanup() {
  [ -n "$ESQ_PID" ] && kill "$ESQ_PID" 2>/dev/null && wait "$ESQ_PID" 2>/dev/null || true
  pg_stop "$PGDATA"
  rm -rf "$WORK"
}
trap cleanup EXIT

say "PostgreSQL on 127.0.0.1:$PG_PORT with $ROWS sample rows"
pg_start --no-sync "$PGDATA" "$PG_PORT" max_connections=200
ADMIN="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
"$ESQ" sample-data --rows "$ROWS" | PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$ADMIN" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 "$ADMIN" <<'SQL'
CREATE ROLE esq_service LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
ALTER ROLE esq_service SET default_transaction_read_only = on;
GRANT USAGE ON SCHEMA public TO esq_service;
GRANT SELECT ON public.burial_2024 TO esq_service;
ANALYZE public.burial_2024;
SQL
SERVICE="postgres://esq_service@127.0.0.1:$PG_PORT/postgres"

say "esq serve, HTTP door on 127.0.0.1:$HTTP_PORT"
ESQ_UPSTREAM__URL=$SERVICE \
ESQ_UPSTREAM__POOL_SIZE=$CONNS \
ESQ_SERVER__HTTP_LISTEN=127.0.0.1:$HTTP_PORT \
ESQ_SERVER__PG_LISTEN=127.0.0.1:$(free_port) \
ESQ_HTTP__RATE_LIMIT_PER_MINUTE=100000000 \
ESQ_SENTINEL__RULES="$BENCH_SENTINEL_RULES" \
ESQ_AUDIT__PATH="$WORK/audit.jsonl" \
ESQ_LOG__FILTER=warn \
  "$ESQ" serve --config config/esq.toml >"$WORK/esq.log" 2>&1 &
ESQ_PID=$!
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null && break
  sleep 0.2
done

TICKET=$(curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/api/esq/ticket" \
  -H 'Authorization: Bearer demo-journalist-token' -H 'Content-Type: application/json' \
  -d '{"dataset":"burial_2024","purpose":"FOIA aggregation","fields":["state","id"],"aggregate":"count","ttl":"60m"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["ticket"])')
BODY='{"groupBy":"state"}'
say "one answer:"
curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/api/dta/query" -H "X-ESQ-Ticket: $TICKET" \
  -H 'Content-Type: application/json' -d "$BODY" | head -c 200; echo " …"

cat >"$WORK/query.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-ESQ-Ticket"] = "$TICKET"
LUA
say "wrk: $CONNS connections, $THREADS threads, ${SECS}s, through the HTTP door"
wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$WORK/query.lua" "http://127.0.0.1:$HTTP_PORT/api/dta/query" \
  | tee "$WORK/wrk.txt"

# The same statement as the guard forwards it.
REWRITE=$("$ESQ" explain 'SELECT state, count(*) AS count FROM "public"."burial_2024" GROUP BY state' \
  --user journalist --dataset burial_2024 --fields state,id --aggregate count \
  --purpose "FOIA aggregation" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["Allow"]["sql"])')
echo "$REWRITE;" >"$WORK/query.sql"
say "direct SQL, one run (psql \\timing):"
psql -X -q "$SERVICE" -c '\timing on' -c "$REWRITE" | tail -1
say "pgbench: the rewritten statement straight to PostgreSQL, $CONNS clients, ${SECS}s"
pgbench -n -M prepared -f "$WORK/query.sql" -c "$CONNS" -j "$THREADS" -T "$SECS" "$SERVICE" 2>&1 \
  | grep -E "latency average|tps|number of transactions actually"

say "esq process after the run: $(ps -o rss= -p "$ESQ_PID" | awk '{printf "%.1f MiB RSS", $1/1024}')"

# Streaming: a row-level answer of every row through the HTTP door; the
# process's memory should not grow with the answer's size.
ROW_TICKET=$(curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/api/esq/ticket" \
  -H 'Authorization: Bearer demo-clinician-token' -H 'Content-Type: application/json' \
  -d '{"dataset":"burial_2024","purpose":"treatment of the patient in my care","fields":["state","county","burial_date"]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["ticket"])')
BYTES=$(curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/api/dta/query" -H "X-ESQ-Ticket: $ROW_TICKET" \
  -H 'Content-Type: application/json' -H 'Accept: application/x-ndjson' -d '{}' -o "$WORK/rows.ndjson" -w '%{size_download}')
say "streamed $(wc -l <"$WORK/rows.ndjson") rows ($BYTES bytes) as NDJSON; esq now: $(ps -o rss= -p "$ESQ_PID" | awk '{printf "%.1f MiB RSS", $1/1024}')"
