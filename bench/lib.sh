# Shared by the bench scripts (sourced after scripts/lib.sh): a throwaway
# PostgreSQL cluster on a loopback port, trust authentication for the
# superuser "postgres", started and stopped the same way in every script.

# The prefix for every command that runs a server: empty, or
# `runuser -u postgres --` after pg_owner as root.
RUN=()

# pg_owner DIR...: initdb refuses to run as root. As root, sets RUN to
# `runuser -u postgres --` and gives each DIR (where the servers will write)
# to the postgres user; as anyone else, does nothing.
pg_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    RUN=(runuser -u postgres --)
    chown postgres "$@"
  fi
}

# pg_start [--no-sync] DATADIR PORT [NAME=VALUE...]: a new cluster in DATADIR
# (initdb: superuser postgres, --auth=trust, UTF8, locale C; --no-sync is
# passed on to initdb), started with pg_ctl -w on 127.0.0.1:PORT, its Unix
# socket in DATADIR, its log in DATADIR/server.log and each NAME=VALUE as
# `-c NAME=VALUE` (values without spaces). Dies if it does not start.
pg_start() {
  local initdb_opts=() settings="" setting
  if [ "$1" = --no-sync ]; then initdb_opts=(--no-sync); shift; fi
  local data=$1 port=$2; shift 2
  for setting in "$@"; do settings+=" -c $setting"; done
  "${RUN[@]}" "$(pg_bindir)/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C \
    "${initdb_opts[@]}" >/dev/null || die "initdb $data failed"
  "${RUN[@]}" "$(pg_bindir)/pg_ctl" -D "$data" -w -l "$data/server.log" \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1$settings" start >/dev/null \
    || die "PostgreSQL did not start; see $data/server.log"
}

# pg_stop DATADIR: stops that cluster at once (-m immediate), quietly, and
# never fails: for cleanup traps, whether or not it was started.
pg_stop() {
  "${RUN[@]}" "$(pg_bindir)/pg_ctl" -D "$1" -m immediate stop >/dev/null 2>&1 || true
}

# pg_bench_db PORT: in the cluster on 127.0.0.1:PORT, the database "bench"
# with pgbench's tables at scale 10, and the login role esq_bench (password
# "bench") that may read pgbench_accounts: esq's upstream in the pgbench
# benches.
pg_bench_db() {
  local admin="postgres://postgres@127.0.0.1:$1"
  psql -X -q "$admin/postgres" -c "CREATE DATABASE bench"
  pgbench -i -s 10 -q "$admin/bench" >/dev/null 2>&1
  psql -X -q "$admin/bench" <<'SQL'
CREATE ROLE esq_bench LOGIN PASSWORD 'bench';
GRANT USAGE ON SCHEMA public TO esq_bench;
GRANT SELECT ON public.pgbench_accounts TO esq_bench;
SQL
}
