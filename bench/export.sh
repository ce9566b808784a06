#!/usr/bin/env bash
# A governed export of every row of a large table (issue 18) against
# `\copy (…) TO file CSV HEADER` straight from PostgreSQL: wall time,
# rows/s and their ratio, the bundle's size, esq's resident memory (idle,
# peak during the export, growth) and its CPU time, and where the export's
# time goes (the time of each job state). Never part of the test suite.
#
#   nice -n 10 bench/export.sh                  # 1,000,000 sample rows, 3 runs
#   ROWS=200000 RUNS=1 bench/export.sh          # quicker
#   PERF=1 nice -n 10 bench/export.sh           # and one more export under perf record
#
# Builds a release esq into its own target directory (CARGO_TARGET_DIR,
# by default ../bench-target beside this checkout, so target/ is left to
# whoever else builds here), starts a throwaway PostgreSQL with the sample
# data, the service and maintenance roles and schema esq (`esq migrate`),
# as scripts/demo sets them up, and `esq serve` with exports on (its own
# signing key and KEK). Then, RUNS times on the same cluster and the same
# esq, interleaved:
#   esq:  a clinician's row-level ticket (id, state, county, burial_date),
#         POST /api/dta/export {"sql":"SELECT id, state, county,
#         burial_date FROM burial_2024"}, GET /api/dta/export/{job} every
#         POLL seconds until COMPLETED; esq's VmRSS sampled every 0.1 s and
#         its VmHWM read before and after (the peak is reset before each
#         export through /proc/<pid>/clear_refs, so each run has its own).
#   COPY: the statement the guard sends for that export (`esq explain`:
#         the same columns and retention cutoff) through psql's \copy as
#         the superuser, into a CSV file.
# The state times come from a bench-only trigger on esq.export_jobs that
# logs each state change with clock_timestamp() (the job row's finished_at
# is the ledger transaction's start, before the subject hashes are
# inserted, so it cannot serve). A one-off COPY before the first round warms
# the cache for both sides. Afterwards: PostgreSQL's costliest statements
# over the runs (pg_stat_statements), the WAL they wrote and the size of the
# consent ledger's subject table. Everything is torn down on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh

ROWS=${ROWS:-1000000}
RUNS=${RUNS:-3}
POLL=${POLL:-0.5}
PERF=${PERF:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(cd .. && pwd)/bench-target}

ensure_rust
ensure_build_packages
ensure_packages pg:postgresql psql:postgresql-client runuser:util-linux curl:curl python3:python3

say "building esq (release) into $CARGO_TARGET_DIR"
cargo build --quiet --release --bin esq
ESQ=$CARGO_TARGET_DIR/release/esq
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src Cargo.toml Cargo.lock migrations 2>/dev/null || COMMIT="$COMMIT + uncommitted changes to src/"
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')

WORK=$(mktemp -d /tmp/esq-export-bench-XXXXXX)
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
pg_start --no-sync "$PGDATA" "$PG_PORT" max_connections=100 shared_buffers=256MB \
  shared_preload_libraries=pg_stat_statements
ADMIN="postgres://postgres@127.0.0.1:$PG_PORT/esq_bench"
psql -X -q -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -c "CREATE DATABASE esq_bench"
loaded=$(date +%s)
"$ESQ" sample-data --rows "$ROWS" | PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$ADMIN" >/dev/null
say "loaded in $(( $(date +%s) - loaded )) s"

# The roles as scripts/demo makes them (trust authentication here, so no
# passwords): esq's read-only service role, and the maintenance role that
# owns schema esq (export jobs, the consent ledger).
psql -X -q -v ON_ERROR_STOP=1 "$ADMIN" >/dev/null <<'SQL'
CREATE ROLE esq_service LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
ALTER ROLE esq_service SET default_transaction_read_only = on;
ALTER ROLE esq_service SET log_statement = none;
ALTER ROLE esq_service SET log_min_error_statement = panic;
ALTER ROLE esq_service SET log_min_duration_statement = -1;
ALTER ROLE esq_service SET log_min_duration_sample = -1;
ALTER ROLE esq_service SET log_transaction_sample_rate = 0;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE TEMPORARY ON DATABASE esq_bench FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea) FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO esq_service;
GRANT SELECT ON public.burial_2024, public.staff_notes TO esq_service;
CREATE ROLE esq_maintenance LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
GRANT CREATE ON DATABASE esq_bench TO esq_maintenance;
GRANT USAGE ON SCHEMA public TO esq_maintenance;
GRANT SELECT, DELETE ON public.burial_2024, public.staff_notes TO esq_maintenance;
ANALYZE public.burial_2024;
SQL

export ESQ_UPSTREAM__URL="postgres://esq_service@127.0.0.1:$PG_PORT/esq_bench"
export ESQ_MAINTENANCE__URL="postgres://esq_maintenance@127.0.0.1:$PG_PORT/esq_bench"
export ESQ_AUDIT__PATH="$WORK/audit/audit.jsonl"
"$ESQ" keys generate --out "$WORK/signing.key" >/dev/null
export ESQ_SIGNING__KEY_FILE="$WORK/signing.key"
"$ESQ" kek generate --out "$WORK/kek" >/dev/null
export ESQ_EXPORTS__DIR="$WORK/exports" ESQ_EXPORTS__KEK_FILE="$WORK/kek" ESQ_EXPORTS__POLL=500ms
export ESQ_SERVER__HTTP_LISTEN=127.0.0.1:$HTTP_PORT ESQ_SERVER__PG_LISTEN=127.0.0.1:$(free_port)
export ESQ_HTTP__RATE_LIMIT_PER_MINUTE=100000000 ESQ_SENTINEL__RULES="$BENCH_SENTINEL_RULES"
export ESQ_LOG__FILTER=warn
"$ESQ" --config config/esq.toml migrate >/dev/null

# Bench only: the time of every state change of a job, from the database's
# clock, in a table of its own (schema esq is esq's; this adds a trigger).
psql -X -q -v ON_ERROR_STOP=1 "$ADMIN" >/dev/null <<'SQL'
CREATE TABLE public.bench_export_states (job text, state text, rows_done bigint, at timestamptz);
CREATE FUNCTION public.bench_export_state() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog AS $$
BEGIN
  INSERT INTO public.bench_export_states VALUES (NEW.id, NEW.state, NEW.rows_done, clock_timestamp());
  RETURN NULL;
END $$;
CREATE TRIGGER bench_export_state_insert AFTER INSERT ON esq.export_jobs
  FOR EACH ROW EXECUTE FUNCTION public.bench_export_state();
CREATE TRIGGER bench_export_state_update AFTER UPDATE ON esq.export_jobs
  FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION public.bench_export_state();
SQL

say "esq serve, HTTP door on 127.0.0.1:$HTTP_PORT"
"$ESQ" --config config/esq.toml serve >"$WORK/esq.log" 2>&1 &
ESQ_PID=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null && break
  kill -0 "$ESQ_PID" 2>/dev/null || { cat "$WORK/esq.log" >&2; die "esq serve stopped"; }
  sleep 0.2
done
curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null || { cat "$WORK/esq.log" >&2; die "esq is not ready"; }

FIELDS='["id","state","county","burial_date"]'
PURPOSE="treatment of the patient in my care"
SQL_ASKED="SELECT id, state, county, burial_date FROM burial_2024"
REWRITE=$("$ESQ" --config config/esq.toml explain "$SQL_ASKED" \
  --user clinician --dataset burial_2024 --fields id,state,county,burial_date \
  --purpose "$PURPOSE" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["Allow"]["sql"])')
echo "the guard's statement, which \\copy runs as the superuser:"
echo "  $REWRITE"

# One export through esq: prints one JSON object.
cat >"$WORK/export_run.py" <<'PY'
import json, subprocess, sys, threading, time, urllib.request

base, pid, admin, poll = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
sql = "SELECT id, state, county, burial_date FROM burial_2024"

def status_kib():
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out

def cpu_seconds():
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, USER_HZ 100

def call(method, path, body=None, headers=None):
    request = urllib.request.Request(base + path, method=method, headers=headers or {},
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.load(answer)

ticket_id = call("POST", "/api/esq/ticket", {
    "dataset": "burial_2024", "purpose": "treatment of the patient in my care",
    "fields": ["id", "state", "county", "burial_date"], "ttl": "10m"},
    {"Authorization": "Bearer demo-clinician-token", "Content-Type": "application/json"})["ticket"]

idle = status_kib()
try:  # reset the peak (VmHWM) to the current RSS, so this run has its own
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
hwm_before = status_kib()["VmHWM"]
samples, done = [], threading.Event()
def sample():
    while not done.is_set():
        samples.append(status_kib()["VmRSS"])
        time.sleep(0.1)
sampler = threading.Thread(target=sample)
sampler.start()

cpu0 = cpu_seconds()
t0 = time.time()
queued = call("POST", "/api/dta/export", {"sql": sql, "reason": "bench"},
              {"X-ESQ-Ticket": ticket_id, "Content-Type": "application/json"})
job = queued["job"]
seen = {}
while True:
    state = call("GET", f"/api/dta/export/{job}", headers={"Authorization": "Bearer demo-clinician-token"})
    seen.setdefault(state["state"], round(time.time() - t0, 2))
    if state["state"] in ("COMPLETED", "FAILED") or time.time() - t0 > 3600:
        break
    time.sleep(poll)
t1 = time.time()
cpu1 = cpu_seconds()
done.set()
sampler.join()
after = status_kib()

# The exact times of the state changes (the bench trigger), relative to t0.
log = subprocess.run(["psql", "-X", "-tA", "-F", "|", admin, "-c",
    f"SELECT state, rows_done, extract(epoch FROM at) FROM public.bench_export_states "
    f"WHERE job = '{job}' ORDER BY at"], capture_output=True, text=True, check=True).stdout
states = [(s, int(r), float(at) - t0) for s, r, at in (l.split("|") for l in log.split("\n") if l)]
end = next((at for s, _, at in states if s in ("COMPLETED", "FAILED")), t1 - t0)
durations = {}
for (s, _, at), (_, _, next_at) in zip(states, states[1:]):
    durations[s] = round(durations.get(s, 0) + next_at - at, 3)
bundle = state.get("bundle") or {}
ledger = state.get("ledger") or {}
print(json.dumps({
    "job": job, "state": state["state"], "error": state.get("error"),
    "rows": state["progress"]["rows"], "subjects": ledger.get("subject_count"),
    "bundle_bytes": bundle.get("bytes"),
    "seconds": round(end, 3), "seconds_polled": round(t1 - t0, 2), "seen": seen,
    "states": durations, "cpu_seconds": round(cpu1 - cpu0, 2),
    "rss_idle_kib": idle["VmRSS"], "hwm_reset": reset, "hwm_before_kib": hwm_before,
    "hwm_after_kib": after["VmHWM"], "rss_max_sampled_kib": max(samples or [0]),
    "rss_after_kib": after["VmRSS"], "samples": len(samples),
}))
PY

copy_run() { # prints: seconds rows bytes
  local out=$WORK/copy.csv start end said
  rm -f "$out"
  start=$(date +%s.%N)
  said=$(psql -X -v ON_ERROR_STOP=1 "$ADMIN" -c "\\copy ($REWRITE) TO '$out' CSV HEADER")
  end=$(date +%s.%N)
  echo "$(python3 -c "print(round($end - $start, 3))") ${said#COPY } $(stat -c %s "$out")"
}

say "warming up: one untimed \\copy"
copy_run >/dev/null
# Where PostgreSQL spends the runs' time (the ledger's statements above all).
psql -X -q -v ON_ERROR_STOP=1 "$ADMIN" -c "CREATE EXTENSION pg_stat_statements" -c "SELECT pg_stat_statements_reset()" >/dev/null
WAL_START=$(psql -X -tA "$ADMIN" -c "SELECT pg_current_wal_lsn()")
CHECKPOINTS_START=$(psql -X -tA "$ADMIN" -c "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")

RESULTS=$WORK/results.jsonl
say "load average before the runs: $(cut -d" " -f1-3 /proc/loadavg)"
for round in $(seq "$RUNS"); do
  say "round $round of $RUNS: esq export"
  python3 "$WORK/export_run.py" "http://127.0.0.1:$HTTP_PORT" "$ESQ_PID" "$ADMIN" "$POLL" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); d["kind"]="esq"; print(json.dumps(d))' \
    | tee -a "$RESULTS"
  grep -q '"state": "COMPLETED"' <(tail -n 1 "$RESULTS") || { tail -20 "$WORK/esq.log" >&2; die "the export did not complete"; }
  say "round $round of $RUNS: \\copy"
  read -r secs rows bytes < <(copy_run)
  echo "{\"kind\": \"copy\", \"seconds\": $secs, \"rows\": $rows, \"bytes\": $bytes}" | tee -a "$RESULTS"
done
CSV_BYTES=$(stat -c %s "$WORK/copy.csv")
say "for reference: gzip -6 of the CSV \\copy wrote ($CSV_BYTES bytes)"
GZIP_START=$(date +%s.%N)
GZIP_BYTES=$(gzip -6 -c "$WORK/copy.csv" | wc -c)
GZIP_SECS=$(python3 -c "print(round($(date +%s.%N) - $GZIP_START, 3))")
echo "{\"kind\": \"gzip\", \"seconds\": $GZIP_SECS, \"bytes\": $GZIP_BYTES, \"in_bytes\": $CSV_BYTES}" | tee -a "$RESULTS"

say "PostgreSQL during the runs: the costliest statements (pg_stat_statements)"
psql -X "$ADMIN" -c "SELECT calls, round(total_exec_time::numeric / 1000, 2) AS total_s,
    round(mean_exec_time::numeric, 1) AS mean_ms, rows, pg_size_pretty(wal_bytes) AS wal,
    left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query
  FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 6"
psql -X "$ADMIN" -c "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), '$WAL_START')) AS wal_written,
    (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) - $CHECKPOINTS_START AS checkpoints,
    (SELECT count(DISTINCT job) FROM esq.export_subjects) AS ledgered_exports,
    (SELECT count(*) FROM esq.export_subjects) AS subject_rows,
    pg_size_pretty(pg_relation_size('esq.export_subjects')) AS subjects_heap,
    pg_size_pretty(pg_indexes_size('esq.export_subjects')) AS subjects_indexes"
if [ "$PERF" = 1 ]; then
  command -v perf >/dev/null || die "PERF=1 needs perf"
  say "one more export under perf record (not counted above)"
  perf record -F 999 -p "$ESQ_PID" -o "$WORK/perf.data" 2>"$WORK/perf.log" &
  PERF_PID=$!
  sleep 1
  python3 "$WORK/export_run.py" "http://127.0.0.1:$HTTP_PORT" "$ESQ_PID" "$ADMIN" "$POLL" >"$WORK/perf-run.json"
  kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
  perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --percent-limit 0.7 --stdio 2>/dev/null \
    | grep -E '^ +[0-9]' | head -45
  echo "perf run: $(cat "$WORK/perf-run.json")"
fi

say "load average after the runs: $(cut -d" " -f1-3 /proc/loadavg)"
if grep -qE "WARN|ERROR" "$WORK/esq.log"; then say "esq logged:"; grep -E "WARN|ERROR" "$WORK/esq.log" | tail -5; fi
say "summary"
echo "esq $COMMIT (release), $STARTED; PostgreSQL $(psql -X -tA "$ADMIN" -c 'SHOW server_version'); $(nproc) cores shared by esq, PostgreSQL and the clients"
python3 - "$RESULTS" "$(nproc)" "$ROWS" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
esq = [r for r in runs if r["kind"] == "esq"]
copy = [r for r in runs if r["kind"] == "copy"]
gz = next(r for r in runs if r["kind"] == "gzip")
med = statistics.median
mib = lambda kib: f"{kib / 1024:.1f}"
print(f"{sys.argv[3]} sample rows; {esq[0]['rows']} exported (the rest are outside the 10-year retention window); {sys.argv[2]} cores\n")
print("| run | esq export s | esq rows/s | bundle stored s | \\copy s | \\copy rows/s | esq / \\copy (rows/s) | bundle bytes | esq CPU s |")
print("|---|---|---|---|---|---|---|---|---|")
ratios = []
# From the POST to the bundle on disk (state STORED), before the ledger.
stored = lambda e: e["seconds"] - e["states"].get("STORED", 0)
for i, (e, c) in enumerate(zip(esq, copy), 1):
    er, cr = e["rows"] / e["seconds"], c["rows"] / c["seconds"]
    ratios.append(er / cr)
    print(f"| {i} | {e['seconds']:.2f} | {er:,.0f} | {stored(e):.2f} | {c['seconds']:.2f} | {cr:,.0f} | {er / cr:.3f} | {e['bundle_bytes']:,} | {e['cpu_seconds']:.1f} |")
es, cs = med([e["seconds"] for e in esq]), med([c["seconds"] for c in copy])
print(f"| median | {es:.2f} | {med([e['rows'] / e['seconds'] for e in esq]):,.0f} | {med([stored(e) for e in esq]):.2f} | {cs:.2f} | "
      f"{med([c['rows'] / c['seconds'] for c in copy]):,.0f} | {med(ratios):.3f} | "
      f"{med([e['bundle_bytes'] for e in esq]):,.0f} | {med([e['cpu_seconds'] for e in esq]):.1f} |")
print(f"\nto the bundle on disk (STORED, before the ledger): median {med([e['rows'] / stored(e) for e in esq]):,.0f} rows/s, "
      f"{med([(e['rows'] / stored(e)) / (c['rows'] / c['seconds']) for e, c in zip(esq, copy)]):.3f} of \\copy")
print(f"\n\\copy wrote {copy[-1]['bytes']:,} bytes of CSV ({copy[-1]['rows']:,} rows); gzip -6 of it: "
      f"{gz['bytes']:,} bytes in {gz['seconds']:.2f} s")
print("\nesq's time by job state (seconds, from the bench trigger's clock_timestamp()):\n")
order = ["QUEUED", "MATERIALIZING", "VALIDATING", "PACKAGING", "ENCRYPTING", "STORED"]
print("| run | " + " | ".join(order) + " | total |")
print("|---" * (len(order) + 2) + "|")
for i, e in enumerate(esq, 1):
    print(f"| {i} | " + " | ".join(f"{e['states'].get(s, 0):.2f}" for s in order) + f" | {e['seconds']:.2f} |")
print("| median | " + " | ".join(f"{med([e['states'].get(s, 0) for e in esq]):.2f}" for s in order) + f" | {es:.2f} |")
print("\n(QUEUED: from the POST to a runner's claim, up to exports.poll = 500 ms; STORED: the ledger"
      " transaction — the entry, the subject hashes, COMPLETED)")
print("\nesq's memory (MiB; the peak, VmHWM, is reset before each export):\n")
print("| run | idle RSS before | peak during (VmHWM) | growth (peak − idle) | max sampled RSS | RSS after |")
print("|---|---|---|---|---|---|")
for i, e in enumerate(esq, 1):
    print(f"| {i} | {mib(e['rss_idle_kib'])} | {mib(e['hwm_after_kib'])} | {mib(e['hwm_after_kib'] - e['rss_idle_kib'])} | "
          f"{mib(e['rss_max_sampled_kib'])} | {mib(e['rss_after_kib'])} |")
if not all(e["hwm_reset"] for e in esq):
    print("\n(the peak could not be reset: VmHWM is the process's peak since it started)")
print(f"\nsubjects in the ledger per export: {', '.join(str(e['subjects']) for e in esq)}")
PY
