//! Deterministic synthetic sample data for demos, docs and integration tests.
//!
//! This module generates `public.burial_2024`, a realistic-looking but entirely
//! fictional table of veteran burial records (no real person is described),
//! and `public.staff_notes`, notes linked to some of them (the catalog's
//! `links`, which right-to-delete follows).
//! It exists so that esq's guards have something meaningful to bite on:
//!
//! * PII columns (`name`, `ssn`, `dob`) that must be masked or forbidden;
//! * `burial_date` spread over 2010..=2024 (about 70% in 2024), so a
//!   retention window (`retention_years`) visibly hides older rows;
//! * state sizes skewed roughly by population (CA, TX, FL biggest) with a few
//!   states pinned to tiny fixed counts (see [`FIXED_STATE_COUNTS`]), so
//!   small-group suppression (`min_group_size: 11`) is visible, including
//!   the 10 / 11 boundary.
//!
//! Output is a pure function of `(rows, seed)`: the same inputs always give
//! byte-identical SQL. [`rows`] is the single source of truth; [`write_sql`]
//! and [`state_counts`] are both built on it, so expected per-state counts
//! never need to be parsed back out of SQL.
//!
//! The SQL script uses only plain statements (no `COPY`), so it runs both
//! through `psql -f` and as one simple-query batch (e.g. tokio-postgres
//! `batch_execute`).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};

/// Default number of rows for the demo dataset.
pub const DEFAULT_ROWS: u64 = 100_000;
/// Default PRNG seed for the demo dataset.
pub const DEFAULT_SEED: u64 = 2024;
/// Fully qualified name of the generated table.
pub const TABLE: &str = "public.burial_2024";
/// Rows per `INSERT` statement.
pub const INSERT_BATCH: u64 = 1_000;

/// States whose row counts are pinned (when `rows >= 1000`) so that
/// small-group suppression with `min_group_size: 11` is visible:
/// WY, VT, AK and ND fall below 11 and SD sits exactly on the boundary.
/// For `rows < 1000` the counts are scaled down proportionally
/// (`count * rows / 1000`, possibly 0).
pub const FIXED_STATE_COUNTS: [(&str, u64); 5] =
    [("WY", 10), ("VT", 7), ("AK", 4), ("ND", 1), ("SD", 11)];

/// Remaining states with weights roughly proportional to population
/// (hundreds of thousands of residents) and a few counties each.
const STATES: [(&str, u64, &[&str]); 46] = [
    (
        "CA",
        390,
        &["Los Angeles", "San Diego", "Orange", "Riverside"],
    ),
    ("TX", 300, &["Harris", "Dallas", "Tarrant", "Bexar"]),
    (
        "FL",
        222,
        &["Miami-Dade", "Broward", "Palm Beach", "Hillsborough"],
    ),
    ("NY", 196, &["Kings", "Queens", "New York", "Suffolk"]),
    ("PA", 130, &["Philadelphia", "Allegheny", "Montgomery"]),
    ("IL", 125, &["Cook", "DuPage", "Lake"]),
    ("OH", 118, &["Franklin", "Cuyahoga", "Hamilton"]),
    ("GA", 110, &["Fulton", "Gwinnett", "Cobb"]),
    ("NC", 108, &["Wake", "Mecklenburg", "Guilford"]),
    ("MI", 100, &["Wayne", "Oakland", "Macomb"]),
    ("NJ", 93, &["Bergen", "Middlesex", "Essex"]),
    ("VA", 87, &["Fairfax", "Prince William", "Virginia Beach"]),
    ("WA", 78, &["King", "Pierce", "Snohomish"]),
    ("AZ", 74, &["Maricopa", "Pima", "Pinal"]),
    ("TN", 71, &["Shelby", "Davidson", "Knox"]),
    ("MA", 70, &["Middlesex", "Worcester", "Suffolk"]),
    ("IN", 68, &["Marion", "Lake", "Allen"]),
    ("MO", 62, &["St. Louis", "Jackson", "St. Charles"]),
    ("MD", 62, &["Montgomery", "Prince George's", "Baltimore"]),
    ("WI", 59, &["Milwaukee", "Dane", "Waukesha"]),
    ("CO", 58, &["Denver", "El Paso", "Arapahoe"]),
    ("MN", 57, &["Hennepin", "Ramsey", "Dakota"]),
    ("SC", 53, &["Greenville", "Richland", "Charleston"]),
    ("AL", 51, &["Jefferson", "Mobile", "Madison"]),
    ("LA", 46, &["East Baton Rouge", "Jefferson", "Orleans"]),
    ("KY", 45, &["Jefferson", "Fayette", "Kenton"]),
    ("OR", 42, &["Multnomah", "Washington", "Clackamas"]),
    ("OK", 40, &["Oklahoma", "Tulsa", "Cleveland"]),
    ("CT", 36, &["Fairfield", "Hartford", "New Haven"]),
    ("UT", 34, &["Salt Lake", "Utah", "Davis"]),
    ("IA", 32, &["Polk", "Linn", "Scott"]),
    ("NV", 32, &["Clark", "Washoe"]),
    ("AR", 30, &["Pulaski", "Benton", "Washington"]),
    ("MS", 29, &["Hinds", "Harrison", "DeSoto"]),
    ("KS", 29, &["Johnson", "Sedgwick", "Wyandotte"]),
    ("NM", 21, &["Bernalillo", "Dona Ana", "Santa Fe"]),
    ("NE", 20, &["Douglas", "Lancaster", "Sarpy"]),
    ("ID", 19, &["Ada", "Canyon", "Kootenai"]),
    ("WV", 18, &["Kanawha", "Berkeley", "Cabell"]),
    ("HI", 14, &["Honolulu", "Hawaii", "Maui"]),
    ("NH", 14, &["Hillsborough", "Rockingham", "Merrimack"]),
    ("ME", 14, &["Cumberland", "York", "Penobscot"]),
    ("MT", 11, &["Yellowstone", "Missoula", "Gallatin"]),
    ("RI", 11, &["Providence", "Kent", "Washington"]),
    ("DE", 10, &["New Castle", "Sussex", "Kent"]),
    ("DC", 7, &["District of Columbia"]),
];

/// Counties for the states in [`FIXED_STATE_COUNTS`], same order.
const FIXED_STATE_COUNTIES: [&[&str]; 5] = [
    &["Laramie", "Natrona"],
    &["Chittenden", "Rutland"],
    &["Anchorage", "Matanuska-Susitna"],
    &["Cass", "Burleigh"],
    &["Minnehaha", "Pennington"],
];

const FIRST_NAMES: [&str; 40] = [
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Christopher",
    "Nancy",
    "Daniel",
    "Lisa",
    "Matthew",
    "Betty",
    "Anthony",
    "Margaret",
    "Donald",
    "Sandra",
    "Mark",
    "Ashley",
    "Paul",
    "Dorothy",
    "Steven",
    "Kimberly",
    "George",
    "Helen",
    "Kenneth",
    "Carol",
];

const LAST_NAMES: [&str; 40] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "O'Brien",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
];

const BRANCHES: [(&str, u64); 6] = [
    ("Army", 40),
    ("Navy", 22),
    ("Air Force", 20),
    ("Marine Corps", 12),
    ("Coast Guard", 5),
    ("Space Force", 1),
];

const CAUSES: [(&str, u64); 12] = [
    ("Heart disease", 24),
    ("Cancer", 21),
    ("COPD", 7),
    ("Stroke", 6),
    ("Alzheimer's disease", 6),
    ("Diabetes", 4),
    ("Kidney failure", 3),
    ("Pneumonia", 3),
    ("COVID-19", 3),
    ("Accident", 6),
    ("Liver disease", 2),
    ("Sepsis", 2),
];

/// Birth decades (first year, last year inclusive, weight): skewed towards
/// the WWII / Korea / Vietnam generations.
const BIRTH_DECADES: [(u16, u16, u64); 8] = [
    (1920, 1929, 15),
    (1930, 1939, 22),
    (1940, 1949, 28),
    (1950, 1959, 18),
    (1960, 1969, 9),
    (1970, 1979, 4),
    (1980, 1989, 2),
    (1990, 2000, 2),
];

/// Valid SSN areas are 001..=899 except 666; groups 01..=99; serials 0001..=9999.
const SSN_AREAS: u64 = 898;
const SSN_GROUPS: u64 = 99;
const SSN_SERIALS: u64 = 9_999;
const SSN_SPACE: u64 = SSN_AREAS * SSN_GROUPS * SSN_SERIALS;
// The Feistel permutation below works on 30 bits.
const _: () = assert!(SSN_SPACE < 1 << 30);

/// A calendar date (proleptic Gregorian), displayed as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// One generated row of `public.burial_2024`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BurialRow {
    pub id: u64,
    pub name: String,
    pub ssn: String,
    pub dob: Date,
    pub state: &'static str,
    pub county: &'static str,
    pub burial_date: Date,
    pub branch: &'static str,
    pub cause_of_death: &'static str,
}

/// splitmix64: tiny, fast, good enough for synthetic data, fully portable.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), via 128-bit multiply (negligible bias).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        // Callers only pass non-empty constant tables.
        items[self.below(items.len() as u64) as usize]
    }

    fn weighted<'a, T>(&mut self, items: &'a [T], weight: impl Fn(&T) -> u64) -> &'a T {
        let total: u64 = items.iter().map(&weight).sum();
        let mut r = self.below(total);
        for item in items {
            let w = weight(item);
            if r < w {
                return item;
            }
            r -= w;
        }
        &items[items.len() - 1]
    }
}

fn is_leap(year: u16) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn random_date_in_year(rng: &mut SplitMix64, year: u16) -> Date {
    let days = if is_leap(year) { 366 } else { 365 };
    let mut remaining = rng.below(days);
    let mut month = 1u8;
    loop {
        let dim = u64::from(days_in_month(year, month));
        if remaining < dim || month == 12 {
            return Date {
                year,
                month,
                day: (remaining + 1) as u8,
            };
        }
        remaining -= dim;
        month += 1;
    }
}

/// Per-state row counts (without seed dependence), in table order:
/// the 46 weighted states followed by the fixed ones.
fn allocate_states(rows: u64) -> Vec<(&'static str, &'static [&'static str], u64)> {
    let mut out = Vec::with_capacity(STATES.len() + FIXED_STATE_COUNTS.len());
    let mut fixed_total = 0u64;
    let mut fixed = Vec::with_capacity(FIXED_STATE_COUNTS.len());
    for ((state, count), counties) in FIXED_STATE_COUNTS.iter().zip(FIXED_STATE_COUNTIES) {
        let n = if rows >= 1_000 {
            *count
        } else {
            count * rows / 1_000
        };
        fixed_total += n;
        fixed.push((*state, counties, n));
    }
    let rest = rows - fixed_total;
    let weight_total: u64 = STATES.iter().map(|(_, w, _)| *w).sum();
    // Largest-remainder apportionment; ties broken by table order.
    let mut assigned = 0u64;
    let mut remainders = Vec::with_capacity(STATES.len());
    for (i, (state, w, counties)) in STATES.iter().enumerate() {
        let exact = u128::from(rest) * u128::from(*w);
        let n = (exact / u128::from(weight_total)) as u64;
        let rem = (exact % u128::from(weight_total)) as u64;
        assigned += n;
        remainders.push((rem, i));
        out.push((*state, *counties, n));
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders.iter().take((rest - assigned) as usize) {
        out[*i].2 += 1;
    }
    out.extend(fixed);
    out
}

/// A keyed permutation of `0..SSN_SPACE`: a 4-round Feistel network on 30
/// bits, cycle-walked back into range. Bijective, so distinct ids get
/// distinct SSNs, without the visible stride of an affine map.
fn permute_ssn_index(x: u64, key: u64) -> u64 {
    const HALF_BITS: u32 = 15;
    const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
    let mut v = x;
    loop {
        let (mut l, mut r) = (v >> HALF_BITS, v & HALF_MASK);
        for round in 0..4u64 {
            let f = SplitMix64::new(key ^ (round << 32) ^ r).next_u64() & HALF_MASK;
            (l, r) = (r, l ^ f);
        }
        v = (l << HALF_BITS) | r;
        if v < SSN_SPACE {
            return v;
        }
    }
}

fn ssn_for(id: u64, seed: u64) -> String {
    let key = SplitMix64::new(seed ^ 0x55A0_55A0_55A0_55A0).next_u64();
    let n = permute_ssn_index(id % SSN_SPACE, key);
    let serial = n % SSN_SERIALS + 1;
    let group = (n / SSN_SERIALS) % SSN_GROUPS + 1;
    let mut area = n / (SSN_SERIALS * SSN_GROUPS) + 1;
    if area >= 666 {
        area += 1;
    }
    format!("{area:03}-{group:02}-{serial:04}")
}

/// Iterator over generated rows; see [`rows`].
#[derive(Debug, Clone)]
pub struct Rows {
    seed: u64,
    next_id: u64,
    /// State-table index for each row, shuffled.
    assignment: Vec<u8>,
    states: Vec<(&'static str, &'static [&'static str], u64)>,
}

impl Iterator for Rows {
    type Item = BurialRow;

    fn next(&mut self) -> Option<BurialRow> {
        let idx = (self.next_id - 1) as usize;
        let state_idx = *self.assignment.get(idx)?;
        let id = self.next_id;
        self.next_id += 1;
        let (state, counties, _) = self.states[usize::from(state_idx)];
        Some(make_row(id, self.seed, state, counties))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.assignment.len() + 1 - self.next_id as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Rows {}

fn make_row(
    id: u64,
    seed: u64,
    state: &'static str,
    counties: &'static [&'static str],
) -> BurialRow {
    let mut rng = SplitMix64::new(seed.rotate_left(17) ^ id.wrapping_mul(0xD1B5_4A32_D192_ED03));
    rng.next_u64();
    let name = format!("{} {}", rng.pick(&FIRST_NAMES), rng.pick(&LAST_NAMES));
    let &(lo, hi, _) = rng.weighted(&BIRTH_DECADES, |d| d.2);
    let birth_year = lo + rng.below(u64::from(hi - lo + 1)) as u16;
    let dob = random_date_in_year(&mut rng, birth_year);
    let burial_year = if rng.below(100) < 70 {
        2024
    } else {
        // Older burials: 2010..=2023, and at least 18 years after birth.
        let first = 2010.max(birth_year + 18);
        first + rng.below(u64::from(2023 - first + 1)) as u16
    };
    let burial_date = random_date_in_year(&mut rng, burial_year);
    BurialRow {
        id,
        name,
        ssn: ssn_for(id, seed),
        dob,
        state,
        county: rng.pick(counties),
        burial_date,
        branch: rng.weighted(&BRANCHES, |b| b.1).0,
        cause_of_death: rng.weighted(&CAUSES, |c| c.1).0,
    }
}

/// All rows of the dataset, ids `1..=rows`, in id order.
///
/// Memory use is one byte per row (the shuffled state assignment).
pub fn rows(rows: u64, seed: u64) -> Rows {
    let states = allocate_states(rows);
    let mut assignment = Vec::with_capacity(rows as usize);
    for (i, (_, _, n)) in states.iter().enumerate() {
        assignment.extend(std::iter::repeat_n(i as u8, *n as usize));
    }
    let mut rng = SplitMix64::new(seed);
    for i in (1..assignment.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        assignment.swap(i, j);
    }
    Rows {
        seed,
        next_id: 1,
        assignment,
        states,
    }
}

/// Exact number of rows per state that [`write_sql`] writes for `(rows, seed)`.
/// States with zero rows (only possible for small `rows`) are omitted.
pub fn state_counts(rows: u64, seed: u64) -> BTreeMap<String, u64> {
    // Counts depend only on `rows`; `seed` only permutes which ids get which
    // state. It is accepted for API symmetry with `rows`/`write_sql`.
    let _ = seed;
    allocate_states(rows)
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .map(|(state, _, n)| (state.to_string(), n))
        .collect()
}

/// Quotes `s` as a SQL string literal (standard-conforming: `'` becomes `''`).
pub fn quote_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Writes a SQL script that (re)creates and fills `public.burial_2024`.
///
/// The script is one transaction (`BEGIN` … `COMMIT`), uses multi-row
/// `INSERT`s of [`INSERT_BATCH`] rows, creates indexes on `state` and
/// `burial_date`, and runs `ANALYZE`. It works with `psql -f` and as a single
/// simple-query batch.
pub fn write_sql<W: Write>(out: &mut W, rows: u64, seed: u64) -> io::Result<()> {
    let mut out = io::BufWriter::new(out);
    writeln!(
        out,
        "-- esq sample data: {TABLE} (rows={rows}, seed={seed}). Synthetic; describes no real person."
    )?;
    writeln!(out, "BEGIN;")?;
    writeln!(out, "DROP TABLE IF EXISTS {TABLE};")?;
    writeln!(
        out,
        "CREATE TABLE {TABLE} (\n    id bigint PRIMARY KEY,\n    name text NOT NULL,\n    \
         ssn text NOT NULL,\n    dob date NOT NULL,\n    state text NOT NULL,\n    \
         county text NOT NULL,\n    burial_date date NOT NULL,\n    branch text NOT NULL,\n    \
         cause_of_death text NOT NULL\n);"
    )?;
    for (i, row) in self::rows(rows, seed).enumerate() {
        if (i as u64).is_multiple_of(INSERT_BATCH) {
            if i > 0 {
                writeln!(out, ";")?;
            }
            writeln!(
                out,
                "INSERT INTO {TABLE} (id, name, ssn, dob, state, county, burial_date, branch, \
                 cause_of_death) VALUES"
            )?;
        } else {
            writeln!(out, ",")?;
        }
        write!(
            out,
            "({},{},{},'{}',{},{},'{}',{},{})",
            row.id,
            quote_literal(&row.name),
            quote_literal(&row.ssn),
            row.dob,
            quote_literal(row.state),
            quote_literal(row.county),
            row.burial_date,
            quote_literal(row.branch),
            quote_literal(row.cause_of_death),
        )?;
    }
    if rows > 0 {
        writeln!(out, ";")?;
    }
    writeln!(
        out,
        "CREATE INDEX burial_2024_state_idx ON {TABLE} (state);"
    )?;
    writeln!(
        out,
        "CREATE INDEX burial_2024_burial_date_idx ON {TABLE} (burial_date);"
    )?;
    writeln!(out, "ANALYZE {TABLE};")?;
    writeln!(out, "{}", STAFF_NOTES_SQL)?;
    writeln!(out, "COMMIT;")?;
    out.flush()
}

/// Table of the dataset linked to `burial_2024` (right-to-delete follows
/// the link).
pub const STAFF_NOTES: &str = "public.staff_notes";

/// `public.staff_notes`: a cemetery's notes about some burials (one in
/// five, a second note for one in fifteen), derived from the burials so
/// the script stays short. `veteran_id` holds `burial_2024.id`: the
/// catalog links it, so forgetting a veteran deletes and hides their
/// notes too.
const STAFF_NOTES_SQL: &str = "DROP TABLE IF EXISTS public.staff_notes;
CREATE TABLE public.staff_notes (
    id bigserial PRIMARY KEY,
    veteran_id bigint NOT NULL,
    topic text NOT NULL,
    note_date date NOT NULL,
    note text NOT NULL
);
INSERT INTO public.staff_notes (veteran_id, topic, note_date, note)
SELECT id, (ARRAY['headstone','flag','family visit','records request'])[1 + id % 4],
       burial_date, 'note about ' || name
FROM public.burial_2024 WHERE id % 5 = 0
UNION ALL
SELECT id, 'headstone', burial_date + 30, 'second note about ' || name
FROM public.burial_2024 WHERE id % 15 = 0;
CREATE INDEX staff_notes_veteran_idx ON public.staff_notes (veteran_id);
ANALYZE public.staff_notes;";

/// Convenience: the whole script from [`write_sql`] as a `String`.
pub fn sql(rows: u64, seed: u64) -> String {
    let mut buf = Vec::new();
    // Writing into a Vec<u8> cannot fail.
    let _ = write_sql(&mut buf, rows, seed);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn deterministic_and_seed_sensitive() {
        let a = sql(3_000, DEFAULT_SEED);
        let b = sql(3_000, DEFAULT_SEED);
        assert_eq!(a, b);
        let c = sql(3_000, DEFAULT_SEED + 1);
        assert_ne!(a, c);
    }

    #[test]
    fn row_count_and_batches() {
        let s = sql(2_500, 7);
        assert_eq!(s.matches(&format!("INSERT INTO {TABLE}")).count(), 3);
        assert_eq!(s.matches(&format!("INSERT INTO {STAFF_NOTES}")).count(), 1);
        assert_eq!(rows(2_500, 7).count(), 2_500);
        assert_eq!(rows(2_500, 7).len(), 2_500);
        let ids: Vec<u64> = rows(2_500, 7).map(|r| r.id).collect();
        assert_eq!(ids, (1..=2_500).collect::<Vec<_>>());
        assert!(s.starts_with("-- esq sample data"));
        assert!(s.trim_end().ends_with("COMMIT;"));
        assert!(!s.contains("COPY"));
        // Empty dataset still yields a valid script.
        let empty = sql(0, 1);
        assert!(!empty.contains(&format!("INSERT INTO {TABLE}")));
        assert!(empty.contains("CREATE TABLE"));
    }

    #[test]
    fn state_distribution_default() {
        let counts = state_counts(DEFAULT_ROWS, DEFAULT_SEED);
        assert_eq!(counts.len(), 51, "all 50 states + DC");
        assert_eq!(counts.values().sum::<u64>(), DEFAULT_ROWS);
        let tiny = counts.values().filter(|n| **n >= 1 && **n < 11).count();
        assert!(tiny >= 4, "{tiny} tiny states");
        assert_eq!(counts["SD"], 11);
        assert_eq!(counts["WY"], 10);
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        assert!(max >= 1_000 * min, "max {max} min {min}");
        let mut by_size: Vec<_> = counts.iter().collect();
        by_size.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<&str> = by_size.iter().take(3).map(|(s, _)| s.as_str()).collect();
        assert_eq!(top, ["CA", "TX", "FL"]);
    }

    #[test]
    fn state_counts_agree_with_rows() {
        for (n, seed) in [(DEFAULT_ROWS, DEFAULT_SEED), (2_000, 1), (500, 3), (7, 9)] {
            let mut actual = BTreeMap::new();
            for r in rows(n, seed) {
                *actual.entry(r.state.to_string()).or_insert(0u64) += 1;
            }
            assert_eq!(actual, state_counts(n, seed), "rows={n}");
        }
    }

    #[test]
    fn ssns_unique_and_well_formed() {
        let mut seen = HashSet::new();
        for r in rows(DEFAULT_ROWS, DEFAULT_SEED) {
            let b = r.ssn.as_bytes();
            assert_eq!(b.len(), 11);
            assert_eq!((b[3], b[6]), (b'-', b'-'));
            assert!(!r.ssn.starts_with("000") && !r.ssn.starts_with("666"));
            assert!(!r.ssn.starts_with('9'));
            assert!(seen.insert(r.ssn));
        }
    }

    #[test]
    fn dates_realistic() {
        let mut in_2024 = 0u64;
        let mut total = 0u64;
        for r in rows(20_000, DEFAULT_SEED) {
            total += 1;
            assert!((1920..=2000).contains(&r.dob.year));
            assert!((2010..=2024).contains(&r.burial_date.year));
            assert!(r.burial_date.year >= r.dob.year + 18);
            assert!(r.dob.day >= 1 && r.dob.day <= days_in_month(r.dob.year, r.dob.month));
            if r.burial_date.year == 2024 {
                in_2024 += 1;
            }
        }
        let pct = in_2024 * 100 / total;
        assert!((65..=75).contains(&pct), "{pct}% in 2024");
    }

    #[test]
    fn quoting_round_trips() {
        assert_eq!(quote_literal("O'Brien"), "'O''Brien'");
        assert_eq!(quote_literal("a''b"), "'a''''b'");
        let s = sql(5_000, DEFAULT_SEED);
        assert!(s.contains("O''Brien'"));
        assert!(!s.contains("O'Brien"));
        // Un-quote every literal in the VALUES lists: the result must be the
        // original row values, proving the escaping round-trips.
        let r = rows(5_000, DEFAULT_SEED)
            .find(|r| r.name.contains('\''))
            .map(|r| (r.id, r.name));
        let (id, name) = r.unwrap_or_default();
        let line = s
            .lines()
            .find(|l| l.starts_with(&format!("({id},")))
            .unwrap_or_default();
        let lit = &line[line.find(',').unwrap_or(0) + 1..];
        let mut decoded = String::new();
        let mut chars = lit.chars().skip(1).peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    decoded.push('\'');
                } else {
                    break;
                }
            } else {
                decoded.push(c);
            }
        }
        assert_eq!(decoded, name);
        assert!(name.ends_with("O'Brien"));
    }
}
