"""Python drivers through esq's PostgreSQL door: their catalog calls and a
query under a ticket, as BI tools and notebooks make them.

Run by tests/drivers.rs as `python_drivers.py FAMILY` (psycopg, sqlalchemy,
asyncpg or odbc) with ESQ_HOST, ESQ_PORT, ESQ_DB, ESQ_USER, ESQ_PASSWORD (a
user's login) and ESQ_TICKET set. Prints one JSON object per step: what the
driver saw, or the SQLSTATE and message of a failed step (the Rust side
asserts on them). Exits 3 when a driver module is missing.
"""
import asyncio
import json
import os
import sys
import traceback

HOST, PORT, DB, USER, PASSWORD, TICKET = (
    os.environ[k] for k in ("ESQ_HOST", "ESQ_PORT", "ESQ_DB", "ESQ_USER", "ESQ_PASSWORD", "ESQ_TICKET")
)
AGGREGATE = "SELECT state, count(*) AS n FROM burial_2024 GROUP BY state ORDER BY state"
DENIED = "SELECT ssn FROM burial_2024 LIMIT 1"


def report(step, rows=None, error=None):
    line = {"step": step, "ok": error is None}
    if error is None:
        line["rows"] = [[None if v is None else str(v) for v in row] for row in rows or []]
    else:
        line["sqlstate"] = sqlstate(error)
        line["error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(line), flush=True)


def sqlstate(error):
    for attr in ("sqlstate", "pgcode"):
        code = getattr(error, attr, None)
        if isinstance(code, str):
            return code
    # pyodbc: ('42501', '[42501] ERROR: …')
    args = getattr(error, "args", ())
    if args and isinstance(args[0], str) and len(args[0]) == 5:
        return args[0]
    return None


def step(name, run):
    try:
        report(name, run())
    except Exception as error:  # every driver has its own error classes
        report(name, error=error)
        traceback.print_exc()


def psycopg_steps():
    import psycopg

    conninfo = f"host={HOST} port={PORT} dbname={DB} user=ticket password={TICKET} sslmode=disable"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        report("connect", [[psycopg.__version__]])
        step("informationSchema", lambda: conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' ORDER BY table_name").fetchall())
        # Server-side binding (extended protocol) and a prepared statement.
        step("preparedQuery", lambda: [
            conn.execute(
                "SELECT state, count(*) AS n FROM burial_2024 WHERE state = %s GROUP BY state",
                ("CA",), prepare=True).fetchall()
            for _ in range(3)][-1])
        step("query", lambda: conn.execute(AGGREGATE).fetchall())
        step("deniedQuery", lambda: conn.execute(DENIED).fetchall())
        try:
            conn.execute(DENIED)
        except psycopg.errors.InsufficientPrivilege as denied:
            report("deniedHint", [[bool(denied.diag.message_hint)]])


def sqlalchemy_steps():
    import pandas as pd
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://{USER}:{PASSWORD}@{HOST}:{PORT}/{DB}?sslmode=disable"
    )
    inspector = sqlalchemy.inspect(engine)
    report("connect", [[sqlalchemy.__version__]])
    step("get_schema_names", lambda: [[s] for s in inspector.get_schema_names()])
    step("get_table_names", lambda: [[t] for t in inspector.get_table_names()])
    step("get_columns", lambda: [
        [c["name"], c["type"], c["nullable"]] for c in inspector.get_columns("burial_2024")])
    step("get_pk_constraint", lambda: [
        [inspector.get_pk_constraint("burial_2024").get("name"),
         ",".join(inspector.get_pk_constraint("burial_2024")["constrained_columns"])]])
    step("get_indexes", lambda: [
        [i["name"], ",".join(c or "" for c in i["column_names"]), i["unique"]]
        for i in inspector.get_indexes("burial_2024")])
    step("get_foreign_keys", lambda: [
        [f.get("name"), ",".join(f["constrained_columns"])]
        for f in inspector.get_foreign_keys("burial_2024")])

    def query():
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SET esq.ticket = '{TICKET}'")
            frame = pd.read_sql(sqlalchemy.text(AGGREGATE), conn)
            return frame.itertuples(index=False)

    step("query", lambda: list(query()))


def asyncpg_steps():
    import asyncpg

    async def run():
        conn = await asyncpg.connect(
            host=HOST, port=int(PORT), database=DB, user=USER, password=PASSWORD, ssl=False)
        try:
            report("connect", [[asyncpg.__version__]])
            for name, coro in (
                ("informationSchema", lambda: conn.fetch(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                    "burial_2024")),
                ("setTicket", lambda: conn.execute(f"SET esq.ticket = '{TICKET}'")),
                ("query", lambda: conn.fetch(AGGREGATE)),
                ("preparedQuery", lambda: conn.fetch(
                    "SELECT state, count(*) AS n FROM burial_2024 WHERE state = $1 GROUP BY state",
                    "CA")),
                ("deniedQuery", lambda: conn.fetch(DENIED)),
            ):
                try:
                    rows = await coro()
                    report(name, [] if isinstance(rows, str) else [tuple(r) for r in rows])
                except Exception as error:
                    report(name, error=error)
        finally:
            await conn.close()

    asyncio.run(run())


def odbc_steps():
    import pyodbc

    driver = os.environ.get("ESQ_ODBC_DRIVER", "PostgreSQL Unicode")
    conn = pyodbc.connect(
        f"DRIVER={{{driver}}};SERVER={HOST};PORT={PORT};DATABASE={DB};"
        f"UID={USER};PWD={PASSWORD};SSLmode=disable",
        autocommit=True,
    )
    report("connect", [[conn.getinfo(pyodbc.SQL_DRIVER_NAME), conn.getinfo(pyodbc.SQL_DRIVER_VER)]])
    cur = conn.cursor()
    step("tables", lambda: [
        [r.table_schem, r.table_name, r.table_type]
        for r in cur.tables(schema="public", tableType="TABLE").fetchall()])
    step("columns", lambda: [
        [r.column_name, r.type_name, r.nullable]
        for r in cur.columns(table="burial_2024", schema="public").fetchall()])
    step("primaryKeys", lambda: [
        [r.column_name, r.pk_name] for r in cur.primaryKeys("burial_2024", schema="public").fetchall()])
    step("statistics", lambda: [
        [r.index_name, r.column_name, r.non_unique, r.cardinality, r.pages]
        for r in cur.statistics("burial_2024", schema="public").fetchall()])
    step("getTypeInfo", lambda: [[r.type_name] for r in cur.getTypeInfo().fetchall()])
    step("setTicket", lambda: cur.execute(f"SET esq.ticket = '{TICKET}'") and [])
    step("query", lambda: cur.execute(AGGREGATE).fetchall())
    step("preparedQuery", lambda: cur.execute(
        "SELECT state, count(*) AS n FROM burial_2024 WHERE state = ? GROUP BY state", "CA").fetchall())
    step("deniedQuery", lambda: cur.execute(DENIED).fetchall())
    conn.close()


FAMILIES = {
    "psycopg": psycopg_steps,
    "sqlalchemy": sqlalchemy_steps,
    "asyncpg": asyncpg_steps,
    "odbc": odbc_steps,
}

if __name__ == "__main__":
    family = sys.argv[1] if len(sys.argv) > 1 else ""
    if family not in FAMILIES:
        sys.exit(f"usage: python_drivers.py {{{'|'.join(FAMILIES)}}}")
    try:
        FAMILIES[family]()
    except ModuleNotFoundError as missing:
        print(f"driver module missing: {missing} (scripts/test installs tests/drivers/requirements.txt "
              "into target/venv)", file=sys.stderr)
        sys.exit(3)
    except Exception as error:
        report("connect", error=error)
        traceback.print_exc()
        sys.exit(1)
