# Shared by scripts/demo and scripts/test: find or install what esq needs.
# Debian/Ubuntu: installs missing packages with apt-get (as root, or with
# sudo). Elsewhere: says exactly what is missing and stops.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
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
  say "installing ${missing[*]} (apt-get)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
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
