"""Python drivers through esq's PostgreSQL door, a ticket as the password.

Run by tests/pg_door.rs with ESQ_HOST, ESQ_PORT, ESQ_DB and ESQ_TICKET set.
Exits non-zero (with a message) on any failure.
"""
import os
import sys

import pandas as pd
import psycopg
import sqlalchemy

host, port, db, ticket = (os.environ[k] for k in ("ESQ_HOST", "ESQ_PORT", "ESQ_DB", "ESQ_TICKET"))
conninfo = f"host={host} port={port} dbname={db} user=ticket password={ticket} sslmode=disable"
QUERY = "SELECT state, count(*) AS n FROM burial_2024 WHERE state = %s GROUP BY state"

# psycopg 3: server-side binding (extended protocol) and explicit prepared statements.
with psycopg.connect(conninfo) as conn:
    for _ in range(3):
        rows = conn.execute(QUERY, ("CA",), prepare=True).fetchall()
        assert len(rows) == 1 and rows[0][1] >= 11, rows
    with conn.cursor() as cur:
        cur.execute("SELECT state, count(*) FROM burial_2024 GROUP BY state")
        counts = [n for _, n in cur.fetchall()]
        assert counts and min(counts) >= 11, counts
    try:
        conn.execute("SELECT ssn FROM burial_2024")
        sys.exit("SELECT ssn was not denied")
    except psycopg.errors.InsufficientPrivilege as denied:
        assert denied.diag.message_hint, "a denial carries a hint"
    conn.rollback()

# SQLAlchemy: the inspector (catalog introspection) and pandas.read_sql.
engine = sqlalchemy.create_engine(
    f"postgresql+psycopg://ticket:{ticket}@{host}:{port}/{db}?sslmode=disable"
)
inspector = sqlalchemy.inspect(engine)
assert "burial_2024" in inspector.get_table_names(), inspector.get_table_names()
columns = {c["name"] for c in inspector.get_columns("burial_2024")}
assert {"state", "burial_date"} <= columns, columns
frame = pd.read_sql(
    "SELECT state, count(*) AS n FROM burial_2024 GROUP BY state ORDER BY state", engine
)
assert len(frame) > 10 and frame["n"].min() >= 11, frame
print(f"python drivers ok: {len(frame)} states, psycopg {psycopg.__version__}, "
      f"SQLAlchemy {sqlalchemy.__version__}, pandas {pd.__version__}")
