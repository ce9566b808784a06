// pgJDBC through esq's PostgreSQL door: the DatabaseMetaData calls every
// JDBC tool (DBeaver, DataGrip, Tableau, Metabase) makes, then a query under
// a ticket. Run by tests/drivers.rs (compiled with javac into target/).
//
// Environment: ESQ_HOST, ESQ_PORT, ESQ_DB, ESQ_USER, ESQ_PASSWORD (a user's
// login) and ESQ_TICKET (set with SET esq.ticket for the query step).
// Prints one JSON object per step; a failed step prints its SQLSTATE and
// message instead of stopping the run (the Rust side asserts on them).

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class JdbcDriver {
    interface Step {
        List<List<String>> run() throws SQLException;
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + env("ESQ_HOST") + ":" + env("ESQ_PORT") + "/"
                + env("ESQ_DB");
        Properties props = new Properties();
        props.setProperty("user", env("ESQ_USER"));
        props.setProperty("password", env("ESQ_PASSWORD"));
        props.setProperty("sslmode", "disable");
        props.setProperty("ApplicationName", "esq-driver-test");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            DatabaseMetaData md = conn.getMetaData();
            step("connect", () -> rows(List.of(List.of(md.getDriverVersion()))));
            step("getSchemas", () -> rows(md.getSchemas(), "TABLE_SCHEM"));
            step("getTables", () -> rows(md.getTables(null, "public", "%", new String[] {"TABLE"}),
                    "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE"));
            step("getColumns", () -> rows(md.getColumns(null, "public", "burial_2024", "%"),
                    "COLUMN_NAME", "TYPE_NAME", "IS_NULLABLE"));
            step("getPrimaryKeys", () -> rows(md.getPrimaryKeys(null, "public", "burial_2024"),
                    "COLUMN_NAME", "PK_NAME"));
            step("getIndexInfo", () -> rows(md.getIndexInfo(null, "public", "burial_2024", false, false),
                    "INDEX_NAME", "COLUMN_NAME", "NON_UNIQUE", "CARDINALITY", "PAGES"));
            step("getTypeInfo", () -> rows(md.getTypeInfo(), "TYPE_NAME"));
            step("setTicket", () -> {
                try (Statement st = conn.createStatement()) {
                    st.execute("SET esq.ticket = '" + env("ESQ_TICKET") + "'");
                }
                return List.of();
            });
            step("query", () -> {
                try (Statement st = conn.createStatement()) {
                    return rows(st.executeQuery(
                            "SELECT state, count(*) AS n FROM burial_2024 GROUP BY state ORDER BY state"),
                            "state", "n");
                }
            });
            step("preparedQuery", () -> {
                String sql = "SELECT state, count(*) AS n FROM burial_2024 WHERE state = ? GROUP BY state";
                try (PreparedStatement ps = conn.prepareStatement(sql)) {
                    List<List<String>> all = new ArrayList<>();
                    // Six runs: pgJDBC switches to a named server-side statement at the fifth.
                    for (int i = 0; i < 6; i++) {
                        ps.setString(1, "CA");
                        all = rows(ps.executeQuery(), "state", "n");
                    }
                    return all;
                }
            });
            step("deniedQuery", () -> {
                try (Statement st = conn.createStatement()) {
                    return rows(st.executeQuery("SELECT ssn FROM burial_2024 LIMIT 1"), "ssn");
                }
            });
        }
    }

    static String env(String name) {
        String value = System.getenv(name);
        if (value == null) {
            throw new IllegalStateException("set " + name);
        }
        return value;
    }

    static void step(String name, Step step) {
        StringBuilder out = new StringBuilder("{\"step\":").append(json(name));
        try {
            List<List<String>> rows = step.run();
            out.append(",\"ok\":true,\"rows\":[");
            for (int i = 0; i < rows.size(); i++) {
                out.append(i == 0 ? "[" : ",[");
                List<String> row = rows.get(i);
                for (int j = 0; j < row.size(); j++) {
                    out.append(j == 0 ? "" : ",").append(json(row.get(j)));
                }
                out.append("]");
            }
            out.append("]");
        } catch (SQLException e) {
            out.append(",\"ok\":false,\"sqlstate\":").append(json(e.getSQLState()))
                    .append(",\"error\":").append(json(e.getMessage()));
        }
        System.out.println(out.append("}"));
    }

    static List<List<String>> rows(List<List<String>> rows) {
        return rows;
    }

    /** The named columns of every row (every column when none are named). */
    static List<List<String>> rows(ResultSet rs, String... columns) throws SQLException {
        List<List<String>> rows = new ArrayList<>();
        try (rs) {
            ResultSetMetaData meta = rs.getMetaData();
            while (rs.next()) {
                List<String> row = new ArrayList<>();
                if (columns.length == 0) {
                    for (int i = 1; i <= meta.getColumnCount(); i++) {
                        row.add(rs.getString(i));
                    }
                } else {
                    for (String column : columns) {
                        row.add(rs.getString(column));
                    }
                }
                rows.add(row);
            }
        }
        return rows;
    }

    static String json(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append("\"").toString();
    }
}
