#!/usr/bin/env python3
"""Number crunching for bench/e2e (not meant to be run by hand).

  e2e.py latency DIR          p50 and p99 in ms of pgbench's per-transaction
                              logs (-l) in DIR
  e2e.py idle N PID DSN       opens N idle sessions with DSN; prints the RSS
                              (KiB) of process PID before and with them open
  e2e.py report RAW OUT       writes OUT (bench/RESULTS.md) from the raw
                              outputs bench/e2e left in RAW
"""

import csv
import os
import re
import statistics
import sys
import time
from pathlib import Path

# ---------------------------------------------------------------- latency


def latency(directory):
    """pgbench -l lines: client_id transaction_no time_us script_no epoch us."""
    times = []
    for path in Path(directory).iterdir():
        with open(path) as log:
            for line in log:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    times.append(int(fields[2]))
    if not times:
        print("- -")
        return
    times.sort()

    def pick(q):
        return times[min(len(times) - 1, int(q * len(times)))] / 1000.0

    print(f"{pick(0.50):.3f} {pick(0.99):.3f}")


# ---------------------------------------------------------------- idle


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def idle(n, pid, dsn):
    import psycopg

    before = rss_kib(pid)
    started = time.monotonic()
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(n)]
    opened = time.monotonic() - started
    time.sleep(2)
    # Every session still answers: they are open, not merely accepted.
    for conn in conns[:: max(1, n // 20)]:
        conn.execute("SELECT 1").fetchone()
    time.sleep(1)
    after = rss_kib(pid)
    for conn in conns:
        conn.close()
    print(f"before_kib={before}\nafter_kib={after}\nsessions={n}\nopen_seconds={opened:.1f}")


# ---------------------------------------------------------------- report

TARGET_NAMES = {
    "direct": "direct",
    "esq": "esq",
    "esq_write": "esq (audit write)",
    "pgbouncer_session": "PgBouncer session",
    "pgbouncer_txn": "PgBouncer transaction",
    "direct_service": "direct, the guard's rewrite",
    "esq_baseline": "esq baseline",
    "esq_baseline_write": "esq baseline (audit write)",
    "esq_private": "esq, private ticket",
}

# BASELINE=…: each esq target of this build and the baseline binary's twin.
BASELINE_PAIRS = (("esq", "esq_baseline", "fsync"), ("esq_write", "esq_baseline_write", "write"))


# esq as shipped (audit.durability = fsync), and with audit.durability = write.
ESQ_TARGETS = ("esq", "esq_write")
ESQ_LABELS = {"esq": "esq", "esq_write": "esq (`audit.durability = write`)"}


def read_env(path):
    values = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, spec=",.0f", suffix=""):
    return "–" if value is None else f"{value:{spec}}{suffix}"


class Runs:
    def __init__(self, path):
        with open(path) as f:
            self.rows = list(csv.DictReader(f, delimiter="\t"))

    def select(self, section, mode, clients, target):
        return [
            r
            for r in self.rows
            if r["section"] == section
            and r["mode"] == mode
            and r["clients"] == str(clients)
            and r["target"] == target
        ]

    def has(self, section, mode, clients, target):
        return bool(self.select(section, mode, clients, target))

    def failed(self, section, mode, clients, target):
        return any(r["status"] != "ok" for r in self.select(section, mode, clients, target))

    def median(self, field, section, mode, clients, target):
        ok = [r for r in self.select(section, mode, clients, target) if r["status"] == "ok"]
        return median([num(r[field]) for r in ok])

    def ratios(self, field, section, mode, clients, a, b):
        """Per-round a/b (same round), so that drift between rounds cancels."""
        out = []
        rounds = {r["round"] for r in self.rows if r["section"] == section}
        for rnd in sorted(rounds):
            ra = [r for r in self.select(section, mode, clients, a) if r["round"] == rnd]
            rb = [r for r in self.select(section, mode, clients, b) if r["round"] == rnd]
            if ra and rb and ra[0]["status"] == rb[0]["status"] == "ok":
                va, vb = num(ra[0][field]), num(rb[0][field])
                if va is not None and vb:
                    out.append(va / vb)
        return out

    def differences(self, field, section, mode, clients, a, b):
        out = []
        rounds = {r["round"] for r in self.rows if r["section"] == section}
        for rnd in sorted(rounds):
            ra = [r for r in self.select(section, mode, clients, a) if r["round"] == rnd]
            rb = [r for r in self.select(section, mode, clients, b) if r["round"] == rnd]
            if ra and rb and ra[0]["status"] == rb[0]["status"] == "ok":
                va, vb = num(ra[0][field]), num(rb[0][field])
                if va is not None and vb is not None:
                    out.append(va - vb)
        return out


def ratio_cell(values):
    if not values:
        return "–"
    mid = statistics.median(values)
    if len(values) == 1:
        return f"{mid:.2f}"
    return f"{mid:.2f} ({min(values):.2f}–{max(values):.2f})"


def verdict(ok):
    return "–" if ok is None else ("✅" if ok else "❌")


CRITERION_LINE = re.compile(
    r"^(?P<name>[\w-]+/[\w-]+)\s+time:\s+\[\S+ \S+ (?P<mid>[\d.]+) (?P<unit>\S+) \S+ \S+\]",
    re.MULTILINE,
)
UNIT_US = {"ns": 0.001, "µs": 1.0, "us": 1.0, "ms": 1000.0, "s": 1e6}


def criterion(path):
    """{query: {bench: µs}} from `cargo bench --bench guard` output."""
    out = {}
    if not path.exists():
        return out
    for m in CRITERION_LINE.finditer(path.read_text()):
        query, bench = m.group("name").split("/", 1)
        out.setdefault(query, {})[bench] = float(m.group("mid")) * UNIT_US.get(m.group("unit"), 1.0)
    return out


def first_error(raw, section, target):
    """The first `error:` line pgbench printed in a failed run of TARGET, or None."""
    for path in sorted(raw.glob(f"{section}-*-{target}.txt")):
        for line in path.read_text(errors="replace").splitlines():
            if "error:" in line:
                return line.split("error:", 1)[1].strip()[:300]
    return None


def baseline_section(w, runs, env, clients):
    """This build vs the BASELINE binary, per round (issue 15)."""
    commit = env.get("baseline_commit") or "commit not given"
    w("## This build vs the baseline binary (same run)")
    w("")
    w(
        f"esq built from this checkout ({env.get('esq_commit', '?')}, sha256 {env.get('esq_sha256', '?')}…) against "
        f"`{env.get('baseline')}` ({commit}, sha256 {env.get('baseline_sha256', '?')}…): same settings, "
        "servers and ticket requests, each with the config, policies and catalog of its own source "
        f"(the baseline's: {env.get('baseline_config', '?')}); each pair runs back to back within a round, this build first in odd rounds "
        "and the baseline first in even ones. **new / baseline** is the median of the per-round TPS ratios "
        "(range in brackets): above 1 the new build is faster. Differences within the ranges are noise on "
        "these shared cores."
    )
    w("")
    for mode in ("simple", "prepared"):
        pairs = [(n, b, d) for n, b, d in BASELINE_PAIRS if any(runs.has("select_only", mode, c, b) for c in clients)]
        if not pairs:
            continue
        w(f"### pgbench `-S -M {mode}`")
        w("")
        w("| audit durability | clients | new TPS | baseline TPS | new / baseline | new mean / p99 ms | baseline mean / p99 ms | p99 new − baseline |")
        w("|---|---|---|---|---|---|---|---|")
        for new, base, durability in pairs:
            for c in clients:
                if not runs.has("select_only", mode, c, base):
                    continue
                tps = []
                for t in (new, base):
                    tps.append(fmt(runs.median("tps", "select_only", mode, c, t))
                               + (" (failed runs)" if runs.failed("select_only", mode, c, t) else ""))
                lat = [" / ".join(fmt(runs.median(f, "select_only", mode, c, t), ".3f") for f in ("lat_ms", "p99_ms"))
                       for t in (new, base)]
                d = runs.differences("p99_ms", "select_only", mode, c, new, base)
                w(f"| {durability} | {c} | {tps[0]} | {tps[1]} | {ratio_cell(runs.ratios('tps', 'select_only', mode, c, new, base))} "
                  f"| {lat[0]} | {lat[1]} | {fmt(statistics.median(d) if d else None, '+.3f', ' ms')} |")
        w("")
    if runs.has("foia", "prepared", 8, "esq_baseline"):
        w("### The FOIA aggregate (8 clients, `-M prepared`)")
        w("")
        w("| new TPS | baseline TPS | new / baseline | new / direct | baseline / direct | new mean / p99 ms | baseline mean / p99 ms |")
        w("|---|---|---|---|---|---|---|")
        lat = [" / ".join(fmt(runs.median(f, "foia", "prepared", 8, t), ".2f") for f in ("lat_ms", "p99_ms"))
               for t in ("esq", "esq_baseline")]
        w(f"| {fmt(runs.median('tps', 'foia', 'prepared', 8, 'esq'), ',.1f')} "
          f"| {fmt(runs.median('tps', 'foia', 'prepared', 8, 'esq_baseline'), ',.1f')} "
          f"| {ratio_cell(runs.ratios('tps', 'foia', 'prepared', 8, 'esq', 'esq_baseline'))} "
          f"| {ratio_cell(runs.ratios('tps', 'foia', 'prepared', 8, 'esq', 'direct'))} "
          f"| {ratio_cell(runs.ratios('tps', 'foia', 'prepared', 8, 'esq_baseline', 'direct'))} | {lat[0]} | {lat[1]} |")
        w("")
        pn, pb = env.get("privacy_esq"), env.get("privacy_esq_baseline")
        if pn != pb:
            w(f"Not like for like: the two FOIA tickets differ in privacy (new: `{pn}`, baseline: `{pb}`).")
            w("")


def report(raw, out):
    raw = Path(raw)
    env = read_env(raw / "machine.env")
    runs = Runs(raw / "results.tsv")
    clients = env.get("clients", "1 8 32").split()
    lines = []
    w = lines.append

    w("# esq end to end: results")
    w("")
    w(
        f"Written by `bench/e2e` on {env.get('date', '?')} in one run of "
        f"{int(env.get('elapsed_s', 0)) // 60} min; regenerate with `bench/e2e` (do not edit by hand). "
        "Medians over the rounds; a ratio is the median of the per-round ratios "
        "(each round runs every target back to back, the order rotating), with the range in brackets."
    )
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("|---|---|")
    for key, label in [
        ("cpu", "CPU"),
        ("nproc", "cores (nproc)"),
        ("mem_gib", "memory (GiB)"),
        ("os", "OS"),
        ("kernel", "kernel"),
        ("postgres", "PostgreSQL"),
        ("pgbench", "pgbench"),
        ("pgbouncer", "PgBouncer"),
        ("rustc", "rustc"),
        ("esq_commit", "esq commit (release build)"),
        ("baseline", "esq baseline binary (`BASELINE`)"),
        ("baseline_commit", "esq baseline commit"),
        ("baseline_config", "esq baseline's config, policies and catalog from"),
        ("loadavg_start", "load average at start"),
        ("loadavg_end", "load average at end"),
        ("busy", "other busy processes at start (>20 % CPU)"),
    ]:
        if key.startswith("baseline") and "baseline" not in env:
            continue
        w(f"| {label} | {env.get(key, '?') or '–'} |")
    w("")
    w(
        "Everything (pgbench, esq, PgBouncer, PostgreSQL) shares these cores on loopback: "
        "a proxy's extra hop costs CPU the database would otherwise use, so ratios here are "
        "lower than on a machine where the proxy has cores of its own. If the load average "
        "at start was well above 0, other work was running: compare ratios, not absolute figures."
    )
    w("")

    # ---- targets
    stream_direct = runs.median("lat_ms", "stream", "simple", 1, "direct")
    stream_esq = runs.median("lat_ms", "stream", "simple", 1, "esq")
    stream_ratios = [1.0 / r for r in runs.ratios("lat_ms", "stream", "simple", 1, "esq", "direct")]
    hwm = []
    rss_path = raw / "stream_rss.tsv"
    if rss_path.exists():
        with open(rss_path) as f:
            hwm = [int(r["esq_hwm_kib"]) for r in csv.DictReader(f, delimiter="\t") if r["target"] == "esq"]
    idle_esq = read_env(raw / "idle_esq.txt")
    idle_pgb = read_env(raw / "idle_pgbouncer.txt")

    def per_session(values):
        try:
            return (int(values["after_kib"]) - int(values["before_kib"])) / int(values["sessions"])
        except (KeyError, ValueError, ZeroDivisionError):
            return None

    idle_per = per_session(idle_esq)
    idle_pgb_per = per_session(idle_pgb)

    w("## Targets (issue 8)")
    w("")
    w("| what | measured | target | |")
    w("|---|---|---|---|")
    for esq in ESQ_TARGETS:
        if not runs.has("select_only", "prepared", 8, esq):
            continue
        name = ESQ_LABELS[esq]
        r = runs.ratios("tps", "select_only", "prepared", 8, esq, "direct")
        w(f"| TPS {name} / direct, `-S -M prepared`, 8 clients | {ratio_cell(r)} | ≥ 0.85 | {verdict(r and statistics.median(r) >= 0.85)} |")
        r = runs.ratios("tps", "select_only", "prepared", 8, esq, "pgbouncer_session")
        w(f"| TPS {name} / PgBouncer (session), `-S -M prepared`, 8 clients | {ratio_cell(r)} | ≥ 1.0 | {verdict(r and statistics.median(r) >= 1.0)} |")
        if runs.has("select_only", "prepared", 8, "pgbouncer_txn"):
            r = runs.ratios("tps", "select_only", "prepared", 8, esq, "pgbouncer_txn")
            w(f"| TPS {name} / PgBouncer (transaction), `-S -M prepared`, 8 clients | {ratio_cell(r)} | ≥ 1.0 | {verdict(r and statistics.median(r) >= 1.0)} |")
        for c in ("1", "8"):
            d = runs.differences("p99_ms", "select_only", "prepared", c, esq, "direct")
            mid = statistics.median(d) if d else None
            w(
                f"| p99 latency added by {name}, `-S -M prepared`, {c} client{'s' if c != '1' else ''} "
                f"| {fmt(mid, '.3f', ' ms')} | < 0.5 ms | {verdict(None if mid is None else mid < 0.5)} |"
            )
    mid = statistics.median(stream_ratios) if stream_ratios else None
    w(f"| 1M-row stream, esq / direct throughput | {ratio_cell(stream_ratios)} | ≥ 0.9 | {verdict(None if mid is None else mid >= 0.9)} |")
    peak = max(hwm) / 1024 if hwm else None
    w(f"| esq peak RSS while streaming 1M rows | {fmt(peak, '.1f', ' MiB')} | < 64 MiB | {verdict(None if peak is None else peak < 64)} |")
    w(
        f"| esq RSS per idle client session ({idle_esq.get('sessions', '?')} open) "
        f"| {fmt(idle_per, '.1f', ' KiB')} | < 64 KiB | {verdict(None if idle_per is None else idle_per < 64)} |"
    )
    w("")
    w(
        "The p99 target is read at 1 client (the hop's own cost) and at 8 clients (with queueing "
        "on the shared cores). What limits esq, with profiles: [PROFILE.md](PROFILE.md)."
    )
    w("")

    # ---- pgbench -S
    secs = env.get("secs", "?")
    w(f"## pgbench select-only (`-S`), scale {env.get('scale', 10)}, {secs} s per run, {env.get('rounds', '?')} rounds")
    w("")
    for mode in ("simple", "prepared"):
        targets = [t for t in ("direct", "esq", "esq_write", "pgbouncer_session", "pgbouncer_txn") if any(runs.has("select_only", mode, c, t) for c in clients)]
        esqs = [t for t in targets if t in ESQ_TARGETS]
        others = [t for t in targets if t not in ESQ_TARGETS]
        pairs = [(e, t) for e in esqs for t in others]
        if not targets:  # a partial run (MODES) without this mode
            continue
        w(f"### `-M {mode}`")
        w("")
        head = ["clients"] + [f"{TARGET_NAMES[t]} TPS" for t in targets] + [f"{TARGET_NAMES[e]} / {TARGET_NAMES[t]}" for e, t in pairs]
        w("| " + " | ".join(head) + " |")
        w("|" + "---|" * len(head))
        for c in clients:
            cells = [c]
            for t in targets:
                value = fmt(runs.median("tps", "select_only", mode, c, t))
                cells.append(value + (" (failed runs)" if runs.failed("select_only", mode, c, t) else ""))
            for e, t in pairs:
                cells.append(ratio_cell(runs.ratios("tps", "select_only", mode, c, e, t)))
            w("| " + " | ".join(cells) + " |")
        w("")
        head = ["clients"] + [f"{TARGET_NAMES[t]} mean / p50 / p99 ms" for t in targets] + [f"p99 added by {TARGET_NAMES[e]}" for e in esqs]
        w("| " + " | ".join(head) + " |")
        w("|" + "---|" * len(head))
        for c in clients:
            cells = [c]
            for t in targets:
                cells.append(
                    " / ".join(
                        fmt(runs.median(f, "select_only", mode, c, t), ".3f")
                        for f in ("lat_ms", "p50_ms", "p99_ms")
                    )
                )
            for e in esqs:
                d = runs.differences("p99_ms", "select_only", mode, c, e, "direct")
                cells.append(fmt(statistics.median(d) if d else None, "+.3f", " ms"))
            w("| " + " | ".join(cells) + " |")
        w("")
    if any(runs.has("select_only", "prepared", c, "direct") for c in clients) and not any(
        runs.has("select_only", "prepared", c, "pgbouncer_txn") for c in clients
    ):
        w(
            f"PgBouncer {env.get('pgbouncer_version', '')} in transaction mode is not run with `-M prepared`: "
            "protocol-level prepared statements need `max_prepared_statements` (PgBouncer ≥ 1.21)."
        )
        w("")

    # ---- BASELINE
    if "baseline" in env:
        baseline_section(w, runs, env, clients)

    # ---- FOIA
    w(f"## The FOIA aggregate ({env.get('sample_rows', '?')} sample rows, 8 clients, `-M prepared`)")
    w("")
    w("`SELECT state, count(*) FROM burial_2024 GROUP BY state` through esq under the FOIA ticket "
      "(count only, k = 11), the same statement straight to PostgreSQL, and the guard's rewrite of it "
      "straight to PostgreSQL as esq's service role (what esq forwards: derived table, retention "
      "filter, `HAVING count(*) >= 11`).")
    w("")
    if env.get("privacy_esq") not in (None, "null"):
        w("This run's FOIA ticket carries a privacy obligation (below), so \"the guard's rewrite\" is the "
          "private one (each privacy unit's contribution bounded in SQL), and esq's answers pass its noisy "
          "release step.")
        w("")
    w("| target | TPS | mean / p50 / p99 ms | this / direct | esq / this |")
    w("|---|---|---|---|---|")
    for t in ("direct", "direct_service", "esq", "esq_baseline", "esq_private"):
        if not runs.has("foia", "prepared", 8, t):
            continue
        lat = " / ".join(fmt(runs.median(f, "foia", "prepared", 8, t), ".2f") for f in ("lat_ms", "p50_ms", "p99_ms"))
        ratio = "" if t == "esq" else ratio_cell(runs.ratios("tps", "foia", "prepared", 8, "esq", t))
        failed = " (failed runs)" if runs.failed("foia", "prepared", 8, t) else ""
        to_direct = "" if t == "direct" else ratio_cell(runs.ratios("tps", "foia", "prepared", 8, t, "direct"))
        w(f"| {TARGET_NAMES[t]} | {fmt(runs.median('tps', 'foia', 'prepared', 8, t), ',.1f')}{failed} | {lat} | {to_direct} | {ratio} |")
    w("")
    for t in ("esq", "esq_baseline", "esq_private"):
        error = first_error(raw, "foia", t)
        if error:
            w(f"{TARGET_NAMES[t]} failed: `{error}`")
            w("")
    privacy = {t: env.get(f"privacy_{t}") for t in ("esq", "esq_baseline", "esq_private") if runs.has("foia", "prepared", 8, t)}
    if any(v not in (None, "null") for v in privacy.values()):
        w("The tickets' privacy obligation (the scope esq issued; `null`: none, k-suppression only): "
          + "; ".join(f"{TARGET_NAMES[t]}: `{v or '?'}`" for t, v in privacy.items()) + ".")
        w("")
    if runs.has("foia", "prepared", 8, "esq_private") and not first_error(raw, "foia", "esq_private"):
        r_direct = runs.ratios("tps", "foia", "prepared", 8, "esq_private", "direct")
        r_rewrite = runs.ratios("tps", "foia", "prepared", 8, "esq_private", "direct_service")
        r_esq = runs.ratios("tps", "foia", "prepared", 8, "esq_private", "esq")
        w(f"**Under a private ticket (issue 14)**: TPS esq, private ticket / direct = {ratio_cell(r_direct)}; "
          f"/ the guard's rewrite direct = {ratio_cell(r_rewrite)}; / esq under the FOIA ticket = {ratio_cell(r_esq)}. "
          "Every run repeats one statement, so after the first answer of a budget period these are the "
          "repeats esq answers from its memo without spending budget (DESIGN 3.7).")
        w("")
    elif env.get("private") == "no" and (raw / "ticket-esq_private-foia.err").exists():
        w("`PRIVATE=1` was set but esq refused the FOIA ticket with `privacy` (an esq before issue 14 does not "
          "know the field): no private row. "
          f"esq answered: `{(raw / 'ticket-esq_private-foia.err').read_text().strip()[:300]}`")
        w("")

    # ---- stream
    size = (raw / "stream_size.txt").read_text().strip().split("|") if (raw / "stream_size.txt").exists() else []
    rows = int(size[0]) if size and size[0].isdigit() else 1_000_000
    text_mb = int(size[1]) / 1e6 if len(size) > 1 and size[1].isdigit() else None
    w(f"## Streaming {rows:,} rows (`SELECT aid, bid, abalance, filler FROM pgbench_accounts`, 1 client)")
    w("")
    w("| target | seconds per run | rows/s | esq / direct throughput |")
    w("|---|---|---|---|")
    for t, mid in (("direct", stream_direct), ("esq", stream_esq)):
        secs_run = None if mid is None else mid / 1000
        rate = None if not secs_run else rows / secs_run
        w(f"| {t} | {fmt(secs_run, '.2f')} | {fmt(rate)} | {ratio_cell(stream_ratios) if t == 'esq' else ''} |")
    w("")
    if hwm:
        w(
            f"esq's peak RSS (`VmHWM`, reset before each run) while streaming: "
            f"{', '.join(f'{h / 1024:.1f}' for h in hwm)} MiB"
            + (f" (the text of the rows is {text_mb:.0f} MB)." if text_mb else ".")
        )
        w("")

    # ---- idle
    w("## Idle client sessions")
    w("")
    w("| process | sessions | RSS before | RSS with them open | per session | time to open them |")
    w("|---|---|---|---|---|---|")
    for label, values, per in (("esq (session pooling: each also holds an upstream connection)", idle_esq, idle_per),
                               ("PgBouncer, transaction pool (reference)", idle_pgb, idle_pgb_per)):
        if not values:
            continue
        w(
            f"| {label} | {values.get('sessions')} | {int(values['before_kib']) / 1024:.1f} MiB "
            f"| {int(values['after_kib']) / 1024:.1f} MiB | {fmt(per, '.1f', ' KiB')} | {values.get('open_seconds')} s |"
        )
    w("")

    # ---- criterion
    crit = criterion(raw / "criterion.txt")
    if crit:
        w("## Guard decision times (criterion, `cargo bench --bench guard`, before the servers start)")
        w("")
        w("Cold: a decision with the cache disabled (both parsers on the input, analysis, rewrite, "
          "render, both parsers again on the output), what every `-M simple` statement with a new "
          "literal costs. Warm: a cache hit. The bare parses are the reference.")
        w("")
        w("| query | cold (µs) | warm (µs) | sqlparser parse (µs) | pg_query parse (µs) |")
        w("|---|---|---|---|---|")
        for query, benches in crit.items():
            w(
                f"| {query} | {fmt(benches.get('guard_cold'), '.1f')} | {fmt(benches.get('guard_cache_hit'), '.2f')} "
                f"| {fmt(benches.get('sqlparser_parse'), '.1f')} | {fmt(benches.get('pg_query_parse'), '.1f')} |"
            )
        w("")

    # ---- commands
    w("## Commands")
    w("")
    w("`bench/e2e` with " + ", ".join(f"{k.upper()}={env.get(k, '?')}" for k in ("secs", "rounds", "idle", "sample_rows", "stream_runs"))
      + f", CLIENTS=\"{env.get('clients', '')}\". One of each pgbench run as executed "
      "(ports are free ones picked per run; `$TICKET` is a ticket issued over the HTTP door, "
      "`-l` writes the per-transaction log p50/p99 come from):")
    w("")
    w("```")
    commands = (raw / "commands.txt").read_text().splitlines() if (raw / "commands.txt").exists() else []
    w("\n".join(commands))
    w("```")
    w("")
    w("Servers: PostgreSQL with `max_connections = IDLE + 300, shared_buffers = 256MB, fsync = off`; "
      "esq `serve --config config/esq.toml` with `upstream.pool_size` and `pg.max_sessions_per_user` = "
      "IDLE + 100, `log.filter = warn` and the sentinel's default rules with limits it never reaches "
      "(a second esq, \"esq (audit write)\", the same with `audit.durability = write`; this build also with "
      "`upstream.max_per_user` = IDLE + 100, as the idle sessions are one user's; with `BASELINE`, the baseline "
      "binary as \"esq baseline\" and \"esq baseline (audit write)\" with the same settings and its own commit's "
      "config, policies and catalog); "
      "PgBouncer `default_pool_size = 40`, `auth_type = trust`, one instance per pool mode. "
      "Stream RSS: `echo 5 > /proc/<esq>/clear_refs` before a run, `VmHWM` after it. Idle sessions: "
      "`python3 bench/e2e.py idle` (psycopg) opens them one after another, checks a sample still "
      "answers, then reads `VmRSS`.")
    w("")

    # ---- every run
    w("<details><summary>Every run</summary>")
    w("")
    w("| section | round | mode | clients | target | TPS | mean ms | p50 ms | p99 ms | status |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs.rows:
        w(f"| {r['section']} | {r['round']} | {r['mode']} | {r['clients']} | {r['target']} | {fmt(num(r['tps']), ',.1f')} "
          f"| {r['lat_ms'] or '–'} | {r['p50_ms']} | {r['p99_ms']} | {r['status']} |")
    w("")
    w("</details>")
    Path(out).write_text("\n".join(lines) + "\n")


def main(argv):
    if len(argv) >= 2 and argv[1] == "latency":
        latency(argv[2])
    elif len(argv) >= 2 and argv[1] == "idle":
        idle(int(argv[2]), int(argv[3]), argv[4])
    elif len(argv) >= 2 and argv[1] == "report":
        report(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
