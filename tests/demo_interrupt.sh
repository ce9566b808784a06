#!/usr/bin/env bash
# Ctrl-C on `scripts/demo | cat` must stop the demo's PostgreSQL (issue 20).
#
# Runs the demo in a process group of its own, on a scratch ESQ_DEMO_DIR,
# with its output piped to cat; waits until its PostgreSQL is up and the
# tour began; sends
# SIGINT to the whole group, as a terminal's Ctrl-C does (which kills cat
# too, so the demo's next write meets a closed pipe); then checks that the
# demo ended and its cluster is stopped. Needs what scripts/demo needs;
# about a minute once esq is built.
#
#   tests/demo_interrupt.sh
#   UNTIL_STEP=12 tests/demo_interrupt.sh   (Ctrl-C at step 12: esq serve
#   and the webhook receiver run too; the group must end, so they stop)
#   DEMO_SCRIPT=path/to/another/demo tests/demo_interrupt.sh   (must fail
#   for a demo without the traps, e.g. the one before issue 20)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DIR=$(mktemp -d "${TMPDIR:-/tmp}/esq-demo-interrupt.XXXXXX")
# The postgres user (the demo runs PostgreSQL as it under root) reaches it.
chmod 755 "$DIR"
PGDATA_DIR=$DIR/pg
BIN=$(pg_bindir)
RUN=()
[ "$(id -u)" -ne 0 ] || RUN=(runuser -u postgres --)
GROUP=""
finish() {
  set +e
  [ -z "$GROUP" ] || kill -KILL -- "-$GROUP" 2>/dev/null
  [ ! -f "$PGDATA_DIR/postmaster.pid" ] \
    || "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1
  rm -rf "$DIR"
}
trap finish EXIT

# A session of its own, whose id is the process's pid, and SIGINT as a
# foreground job on a terminal has it: a background job of a script starts
# with SIGINT ignored, and a shell cannot trap a signal ignored at entry.
python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execvp("bash", ["bash", "-c", sys.argv[1], "_"] + sys.argv[2:])' \
  'ESQ_DEMO_DIR="$1" "$2" 2>&1 </dev/null | cat >"$1/demo.out"' "$DIR" "${DEMO_SCRIPT:-scripts/demo}" &
GROUP=$!

# Until the tour starts: a Ctrl-C while `pg_ctl start` still waits makes
# pg_ctl itself stop the server it is starting, which would prove nothing.
deadline=$((SECONDS + 1800)) # a first build may be part of it
until grep -q "## ${UNTIL_STEP:-1}\\. " "$DIR/demo.out" 2>/dev/null \
  && "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; do
  kill -0 "$GROUP" 2>/dev/null || die "the demo ended before its tour began: $(tail -5 "$DIR/demo.out")"
  [ "$SECONDS" -lt "$deadline" ] || die "the demo's tour never began"
  sleep 0.2
done
say "the demo's PostgreSQL is up and the tour began; Ctrl-C to the demo's process group"
kill -INT -- "-$GROUP"

deadline=$((SECONDS + 120))
while kill -0 -- "-$GROUP" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || die "the demo did not end after SIGINT: $(tail -5 "$DIR/demo.out")"
  sleep 0.5
done
GROUP=""
if "${RUN[@]}" "$BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
  die "Ctrl-C left the demo's PostgreSQL running ($PGDATA_DIR)"
fi
say "ok: Ctrl-C on a piped demo (step ${UNTIL_STEP:-1}) stopped everything it started, its PostgreSQL too"
