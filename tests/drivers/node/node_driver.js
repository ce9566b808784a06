// node-postgres (`pg`) through esq's PostgreSQL door: connect as a user,
// list the tables and columns from information_schema, then a query under
// a ticket (simple and extended protocol). Run by tests/drivers.rs with
// NODE_PATH pointing at target/node/node_modules (scripts/test installs it
// from this directory's package-lock.json).
//
// Environment: ESQ_HOST, ESQ_PORT, ESQ_DB, ESQ_USER, ESQ_PASSWORD, ESQ_TICKET.
// Prints one JSON object per step; exits 3 when `pg` is not installed.

let pg;
try {
  pg = require("pg");
} catch (e) {
  console.error(`driver module missing: ${e.message} (scripts/test installs tests/drivers/node into target/node)`);
  process.exit(3);
}

const env = (name) => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`set ${name}`);
  return value;
};

function report(step, rows, error) {
  const line = { step, ok: !error };
  if (error) {
    line.sqlstate = error.code || null;
    line.error = String(error.message);
  } else {
    line.rows = (rows || []).map((row) => row.map((v) => (v === null ? null : String(v))));
  }
  console.log(JSON.stringify(line));
}

async function step(name, run) {
  try {
    const result = await run();
    report(name, result ? result.rows : []);
  } catch (error) {
    report(name, null, error);
  }
}

async function main() {
  const client = new pg.Client({
    host: env("ESQ_HOST"),
    port: Number(env("ESQ_PORT")),
    database: env("ESQ_DB"),
    user: env("ESQ_USER"),
    password: env("ESQ_PASSWORD"),
    ssl: false,
  });
  try {
    await client.connect();
    report("connect", [[client.serverVersion || "connected"]]);
  } catch (error) {
    report("connect", null, error);
    return;
  }
  const rowMode = (text, values) => ({ text, values, rowMode: "array" });
  await step("informationSchema", () => client.query(rowMode(
    "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name")));
  await step("columns", () => client.query(rowMode(
    "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
    ["public", "burial_2024"])));
  await step("setTicket", () => client.query(`SET esq.ticket = '${env("ESQ_TICKET")}'`));
  await step("query", () => client.query(rowMode(
    "SELECT state, count(*) AS n FROM burial_2024 GROUP BY state ORDER BY state")));
  await step("preparedQuery", () => client.query({
    name: "by_state",
    text: "SELECT state, count(*) AS n FROM burial_2024 WHERE state = $1 GROUP BY state",
    values: ["CA"],
    rowMode: "array",
  }));
  await step("deniedQuery", () => client.query(rowMode("SELECT ssn FROM burial_2024 LIMIT 1")));
  await client.end();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
