# Shared by scripts/demo and scripts/test: find or install what esq needs.
# Debian/Ubuntu: installs missing packages with apt-get (as root, or with
# sudo). Elsewhere: says exactly what is missing and stops.

# Bold only on a terminal, and never with NO_COLOR (https://no-color.org).
if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then SAY_ON=$'\033[1m' SAY_OFF=$'\033[0m'; else SAY_ON="" SAY_OFF=""; fi
say() { printf '%s==> %s%s\n' "$SAY_ON" "$*" "$SAY_OFF" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The directory with initdb/pg_ctl, or nothing.
pg_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
    return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# ensure_packages CHECK:PACKAGE ...  where CHECK is a command name, or a
# path that must exist, "pg" for PostgreSQL's server binaries, or
# "libclang" for the library pg_query's build (bindgen) loads.
ensure_packages() {
  local missing=() check pkg
  for pair in "$@"; do
    check=${pair%%:*}
    pkg=${pair#*:}
    case "$check" in
      pg) [ -n "$(pg_bindir)" ] && [ -x "$(pg_bindir)/initdb" ] || missing+=("$pkg") ;;
      libclang) compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null \
                  || compgen -G "/usr/lib/*/libclang*.so*" >/dev/null || missing+=("$pkg") ;;
      /*) [ -e "$check" ] || missing+=("$pkg") ;;
      *) command -v "$check" >/dev/null 2>&1 || missing+=("$pkg") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      die "missing packages: ${missing[*]} — install them (Debian: apt-get install -y ${missing[*]}) and run this again"
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing: ${missing[*]} — install them with your system's package manager (Debian names: ${missing[*]})"
  fi
  say "installing ${missing[*]} with apt-get (a few minutes on a fresh machine)"
  with_heartbeat "installing ${missing[*]}" \
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  with_heartbeat "installing ${missing[*]}" \
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

ensure_rust() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) and run this again"
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

# What building esq needs: a C compiler and libclang for pg_query
# (PostgreSQL's own parser, libpg_query); the system OpenSSL for opendp's
# secure RNG (.cargo/config.toml sets OPENSSL_NO_VENDOR=1, so openssl-sys
# links libssl through pkg-config instead of building its own copy).
ensure_build_packages() {
  ensure_packages cc:gcc clang:clang libclang:libclang-dev cmake:cmake \
    pkg-config:pkg-config /usr/include/openssl/ssl.h:libssl-dev
}

# Benchmarks use one ticket far more than the sentinel's default rules allow
# (10,000 uses in 30 s would revoke it mid-run): they run with these limits,
# so the counting still costs what it costs, but nothing trips.
BENCH_SENTINEL_RULES='[{name="ticket_volume", measure="uses", limit=1000000000, window="30s"}, {name="distinct_statements", measure="distinct_statements", limit=1000000000, window="60s"}, {name="denial_streak", measure="denials_in_a_row", per="user", limit=1000000000, window="10m"}]'

# with_heartbeat WHAT COMMAND...: runs COMMAND in the foreground (Ctrl-C
# reaches it) and, while it runs, says "still WHAT" on stderr every
# minute, so a long step is never silent. Returns COMMAND's status.
with_heartbeat() {
  local what=$1 started=$SECONDS status=0 beat
  shift
  # $$ is this script: the heartbeat ends with it, whatever kills it.
  ( while sleep 60 && kill -0 $$ 2>/dev/null; do
      printf '    … still %s (%d min so far)\n' "$what" $(( (SECONDS - started) / 60 )) >&2
    done ) &
  beat=$!
  "$@" || status=$?
  kill "$beat" 2>/dev/null || true
  wait "$beat" 2>/dev/null || true
  return "$status"
}

# build_esq: builds target/debug/esq, saying how long the first build takes
# and showing its progress (cargo's own on a terminal, a line a minute
# otherwise).
build_esq() {
  if [ ! -x target/debug/esq ]; then
    say "building esq for the first time: several hundred crates, 15-20 minutes on 2 cores (later builds take seconds)"
    if [ -t 2 ]; then
      cargo build --bin esq
      return
    fi
  else
    say "building esq"
  fi
  with_heartbeat "building esq" cargo build --quiet --bin esq
}

# shell_words ARG...: the arguments as one line a shell reads back as the
# same arguments (quotes only where needed), for commands shown to be
# copied and pasted.
shell_words() {
  local word out=() plain='^[A-Za-z0-9_@%+=:,./-]+$' sq="'"
  for word in "$@"; do
    if [[ $word =~ $plain ]]; then
      out+=("$word")
    elif [[ $word != *"$sq"* ]]; then
      out+=("$sq$word$sq")
    elif [[ $word != *[\"\$\`\\!]* ]]; then
      out+=("\"$word\"")
    else
      out+=("$sq${word//$sq/$sq\\$sq$sq}$sq")
    fi
  done
  printf '%s' "${out[*]}"
}

# --- The drivers tests/drivers.rs runs (H2: keep this block together) -----
# ensure_test_drivers: pgJDBC, psqlODBC, node-postgres, psycopg, asyncpg and
# SQLAlchemy for tests/drivers.rs. Python packages go into a virtual
# environment under target/venv (never the system Python) from
# tests/drivers/requirements.txt, npm packages into target/node from
# tests/drivers/node/package-lock.json, Debian packages through
# ensure_packages; each is reinstalled only when its list changes. Exports
# the paths the tests read and ESQ_REQUIRE_DRIVERS=1, so that a missing
# driver fails its test instead of skipping it.
ensure_test_drivers() {
  local psqlodbc=/usr/lib/psqlodbcw.so f
  for f in /usr/lib/*/odbc/psqlodbcw.so; do [ -e "$f" ] && psqlodbc=$f; done
  ensure_packages python3:python3 javac:default-jdk-headless \
    /usr/share/java/postgresql.jar:libpostgresql-jdbc-java \
    odbcinst:unixodbc /usr/include/sql.h:unixodbc-dev "$psqlodbc:odbc-postgresql" \
    node:nodejs npm:npm
  # Debian's python3 makes virtual environments only with python3-venv
  # (there is no command to check for: install it when venv cannot work).
  python3 -c 'import ensurepip, venv' 2>/dev/null || ensure_packages python3-venv:python3-venv

  local venv=target/venv requirements=tests/drivers/requirements.txt stamp
  stamp=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$stamp" ]; then
    say "installing the Python drivers into $venv ($requirements)"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || die "python3 -m venv $venv failed"
    with_heartbeat "installing the Python drivers" \
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" \
      || die "cannot install $requirements into $venv: $venv/bin/python -m pip install -r $requirements"
    echo "$stamp" >"$venv/.requirements.sha256"
  fi

  local node=target/node lock=tests/drivers/node/package-lock.json
  stamp=$(cat tests/drivers/node/package.json "$lock" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$node/.lock.sha256" 2>/dev/null)" != "$stamp" ]; then
    say "installing node-postgres into $node ($lock)"
    mkdir -p "$node"
    cp tests/drivers/node/package.json "$lock" "$node/"
    with_heartbeat "installing node-postgres" \
      npm ci --prefix "$node" --no-audit --no-fund --loglevel=error \
      || die "npm ci in $node failed (from $lock)"
    echo "$stamp" >"$node/.lock.sha256"
  fi

  ESQ_TEST_PYTHON="$PWD/$venv/bin/python"
  ESQ_TEST_NODE_PATH="$PWD/$node/node_modules"
  ESQ_TEST_PGJDBC_JAR=/usr/share/java/postgresql.jar
  ESQ_REQUIRE_DRIVERS=1
  export ESQ_TEST_PYTHON ESQ_TEST_NODE_PATH ESQ_TEST_PGJDBC_JAR ESQ_REQUIRE_DRIVERS
}
# --- end of the drivers block ----------------------------------------------
