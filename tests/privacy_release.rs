//! The release step (issue 14) on its own: the noise it adds follows the
//! mechanism's distribution (chi-square, seed-free), it is not predictable,
//! and the differencing attack that recovers a suppressed cell exactly
//! under k alone succeeds under privacy no more often than the discrete
//! Laplace distribution allows.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use bytes::Bytes;
use esq::privacy::mechanism;
use esq::privacy::release::noisy_rows;
use esq::privacy::wire::{decode_int8, encode_int8, BINARY, TEXT};
use esq::privacy::{AnswerKey, ExactAnswer, PrivatePlan, Releaser, Row, SortDirection};

/// A plan for `SELECT <key>, count(*) …` (grouped) or `SELECT count(*) …`.
fn plan(grouped: bool, epsilon: f64, bound: u32) -> PrivatePlan {
    PrivatePlan {
        dataset: "burial_2024".into(),
        count_column: usize::from(grouped),
        key_columns: if grouped { vec![0] } else { vec![] },
        grouped,
        epsilon_per_query_micro: (epsilon * 1e6).round() as u64,
        epsilon_budget_micro: 4_000_000,
        budget_period_seconds: 86_400,
        max_groups_per_unit: bound,
        min_group_size: 11,
        order_by_count: None,
        offset: 0,
        limit: None,
    }
}

fn groups(cells: &[(&str, i64)], format: i16) -> ExactAnswer {
    ExactAnswer {
        rows: cells
            .iter()
            .map(|(key, count)| {
                vec![
                    Some(Bytes::copy_from_slice(key.as_bytes())),
                    Some(encode_int8(*count, format)),
                ]
            })
            .collect(),
        formats: vec![TEXT, format],
    }
}

fn total(count: i64) -> ExactAnswer {
    ExactAnswer {
        rows: vec![vec![Some(encode_int8(count, TEXT))]],
        formats: vec![],
    }
}

fn count_of(row: &Row, column: usize, format: i16) -> i64 {
    decode_int8(row[column].as_ref(), format).unwrap()
}

/// P(X = x) of the discrete Laplace distribution with scale `b`, the one
/// OpenDP samples: (1 − α) / (1 + α) · α^|x|, α = e^(−1/b).
fn pmf(x: i64, b: f64) -> f64 {
    let alpha = (-1.0 / b).exp();
    (1.0 - alpha) / (1.0 + alpha) * alpha.powi(x.unsigned_abs() as i32)
}

/// P(X ≥ x) for x ≥ 1: α^x / (1 + α).
fn upper_tail(x: i64, b: f64) -> f64 {
    let alpha = (-1.0 / b).exp();
    alpha.powi(x as i32) / (1.0 + alpha)
}

/// The chi-square survival function (regularised upper incomplete gamma,
/// by its power series: exact enough for the df and x used here).
fn chi_square_sf(x: f64, df: f64) -> f64 {
    let (s, z) = (df / 2.0, x / 2.0);
    let mut term = 1.0 / s;
    let mut sum = term;
    let mut n = 0.0;
    while term > 1e-17 * sum {
        n += 1.0;
        term *= z / (s + n);
        sum += term;
    }
    let lower = (-z + s * z.ln() - ln_gamma(s)).exp() * sum;
    1.0 - lower
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let series = C[0] + (1..9).map(|i| C[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// The critical value with P(χ²_df ≥ c) = p.
fn chi_square_critical(p: f64, df: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1_000.0);
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if chi_square_sf(mid, df) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Pearson's statistic of `noise` against DLap(b), bins −m..=m plus two
/// tails. Returns (statistic, degrees of freedom).
fn chi_square(noise: &[i64], b: f64, m: i64) -> (f64, f64) {
    let n = noise.len() as f64;
    let mut observed = vec![0u64; (2 * m + 3) as usize];
    for &x in noise {
        let bin = x.clamp(-m - 1, m + 1) + m + 1;
        observed[bin as usize] += 1;
    }
    let mut statistic = 0.0;
    for (bin, &o) in observed.iter().enumerate() {
        let x = bin as i64 - m - 1;
        let p = if x.abs() == m + 1 {
            upper_tail(m + 1, b)
        } else {
            pmf(x, b)
        };
        let e = n * p;
        assert!(e >= 5.0, "bin {x}: expected {e} < 5, widen the tails");
        statistic += (o as f64 - e).powi(2) / e;
    }
    (statistic, observed.len() as f64 - 1.0)
}

/// The chi-square tests below each fail by chance with probability
/// 5e-5 (the critical value's tail), so together at most 1e-4.
const FALSE_FAILURE_EACH: f64 = 5e-5;

#[test]
fn released_totals_follow_the_discrete_laplace_distribution() {
    // ε = 0.5, sensitivity 1: scale b = 2. 20,000 releases, no seed.
    let exact = 1_000_000;
    let plan = plan(false, 0.5, 1);
    let noise: Vec<i64> = (0..20_000)
        .map(|_| {
            let rows = noisy_rows(&plan, total(exact)).unwrap();
            count_of(&rows[0], 0, TEXT) - exact
        })
        .collect();
    let (statistic, df) = chi_square(&noise, 2.0, 9);
    let critical = chi_square_critical(FALSE_FAILURE_EACH, df);
    assert!(
        statistic < critical,
        "chi-square {statistic:.1} ≥ {critical:.1} (df {df}): the noise is not DLap(2)"
    );
    // And it is not a narrower or wider distribution that happens to fit:
    // E|X| = 2α/(1−α²) ≈ 1.92 for b = 2 (standard error here ≈ 0.015, so
    // 0.1 is over six of them: a chance failure below 1e-9).
    let alpha = (-0.5f64).exp();
    let expected = 2.0 * alpha / (1.0 - alpha * alpha);
    let mad = noise.iter().map(|x| x.abs() as f64).sum::<f64>() / noise.len() as f64;
    assert!(
        (mad - expected).abs() < 0.1,
        "mean |noise| {mad}, expected {expected}"
    );
}

#[test]
fn grouped_noise_scales_with_the_contribution_bound() {
    // ε = 0.5, L0 = 3: scale b = 6, in binary int8. 200 large groups × 100
    // releases; all pass the threshold, so none are dropped.
    let plan = plan(true, 0.5, 3);
    let cells: Vec<(String, i64)> = (0..200).map(|i| (format!("g{i:03}"), 100_000)).collect();
    let refs: Vec<(&str, i64)> = cells.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut noise = Vec::new();
    for _ in 0..100 {
        let rows = noisy_rows(&plan, groups(&refs, BINARY)).unwrap();
        assert_eq!(rows.len(), 200);
        noise.extend(rows.iter().map(|r| count_of(r, 1, BINARY) - 100_000));
    }
    let (statistic, df) = chi_square(&noise, 6.0, 20);
    let critical = chi_square_critical(FALSE_FAILURE_EACH, df);
    assert!(
        statistic < critical,
        "chi-square {statistic:.1} ≥ {critical:.1} (df {df}): the noise is not DLap(6)"
    );
}

#[tokio::test]
async fn noise_is_fresh_on_every_release_not_from_a_seed() {
    // Two releases of one exact answer under fresh memo keys: 50 groups,
    // each equal with probability ≤ 0.25, so all 50 equal ≤ 1e-30.
    let releaser = Releaser::memory();
    let plan = PrivatePlan {
        epsilon_budget_micro: 100_000_000,
        ..plan(true, 0.5, 1)
    };
    let cells: Vec<(String, i64)> = (0..50).map(|i| (format!("g{i:02}"), 5_000)).collect();
    let refs: Vec<(&str, i64)> = cells.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let first = releaser
        .release(
            &plan,
            &AnswerKey::simple("a", "S-1", "q1"),
            groups(&refs, TEXT),
        )
        .await
        .unwrap();
    let second = releaser
        .release(
            &plan,
            &AnswerKey::simple("a", "S-1", "q2"),
            groups(&refs, TEXT),
        )
        .await
        .unwrap();
    assert!(first.charged && second.charged);
    assert_ne!(
        first.rows, second.rows,
        "two fresh releases gave equal noise"
    );
    // A second releaser (as after a restart) does not replay the first's.
    let third = Releaser::memory()
        .release(
            &plan,
            &AnswerKey::simple("a", "S-1", "q1"),
            groups(&refs, TEXT),
        )
        .await
        .unwrap();
    assert_ne!(first.rows, third.rows);
}

#[test]
fn keys_pass_through_and_the_answer_reveals_nothing_dropped() {
    let plan = plan(true, 1.0, 1);
    let exact = groups(
        &[("ARMY", 1_200), ("NAVY", 800), ("SPACE FORCE", 3), ("", 0)],
        BINARY,
    );
    let rows = noisy_rows(&plan, exact).unwrap();
    // Small groups vanish without a trace: rows are removed, not marked.
    let keys: Vec<&[u8]> = rows.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(keys, vec![b"ARMY".as_slice(), b"NAVY".as_slice()]);
    assert!(rows
        .iter()
        .all(|r| r.len() == 2 && r[1].as_ref().unwrap().len() == 8));
}

#[test]
fn order_by_count_and_limit_apply_to_the_noisy_answer() {
    let mut plan = plan(true, 1.0, 1);
    plan.order_by_count = Some(SortDirection::Desc);
    plan.limit = Some(2);
    plan.offset = 1;
    let exact = groups(
        &[
            ("A", 100),
            ("B", 5_000),
            ("C", 1_000),
            ("D", 20_000),
            ("E", 2),
        ],
        TEXT,
    );
    let rows = noisy_rows(&plan, exact).unwrap();
    let keys: Vec<&[u8]> = rows.iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(keys, vec![b"B".as_slice(), b"C".as_slice()]);
}

#[test]
fn a_malformed_exact_answer_releases_nothing() {
    let grouped = plan(true, 1.0, 1);
    let mut bad = groups(&[("A", 100)], TEXT);
    bad.rows[0][1] = Some(Bytes::from_static(b"lots"));
    assert!(noisy_rows(&grouped, bad).is_err());
    let short = ExactAnswer {
        rows: vec![vec![Some(Bytes::from_static(b"A"))]],
        formats: vec![],
    };
    assert!(noisy_rows(&grouped, short).is_err());
    // An ungrouped count is exactly one row.
    let two = ExactAnswer {
        rows: vec![vec![Some(encode_int8(1, TEXT))]; 2],
        formats: vec![],
    };
    assert!(noisy_rows(&plan(false, 1.0, 1), two).is_err());
}

/// Probability that a sum of independent DLap(b) variables is 0, by
/// convolving their pmfs on [−r, r] (the mass outside is < 1e-12).
fn sum_is_zero(scales: &[f64]) -> f64 {
    let r = 400i64;
    let mut dist = vec![0.0; (2 * r + 1) as usize];
    dist[r as usize] = 1.0;
    for &b in scales {
        let mut next = vec![0.0; dist.len()];
        for (i, &p) in dist.iter().enumerate() {
            if p < 1e-300 {
                continue;
            }
            for x in -r..=r {
                let j = i as i64 + x;
                if (0..=2 * r).contains(&j) {
                    next[j as usize] += p * pmf(x, b);
                }
            }
        }
        dist = next;
    }
    dist[r as usize]
}

/// The smallest c with P(Binomial(n, p) ≥ c) ≤ alpha.
fn binomial_critical(n: u64, p: f64, alpha: f64) -> u64 {
    let ln_choose = |k: u64| {
        ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
    };
    let prob = |k: u64| (ln_choose(k) + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln()).exp();
    let mut tail = 0.0;
    for c in (0..=n).rev() {
        tail += prob(c);
        if tail > alpha {
            return c + 1;
        }
    }
    0
}

/// Issue 14's attack: California by branch with a SPACE FORCE cell of 3.
const CA_BY_BRANCH: &[(&str, i64)] = &[
    ("AIR FORCE", 400),
    ("ARMY", 1_200),
    ("MARINE CORPS", 127),
    ("NAVY", 800),
    ("SPACE FORCE", 3),
];
const SMALL: &str = "SPACE FORCE";

#[tokio::test]
async fn the_differencing_attack_recovers_the_small_cell_no_more_often_than_the_noise_allows() {
    let k = 11;
    let truth = 3;
    let ca_total: i64 = CA_BY_BRANCH.iter().map(|(_, c)| c).sum();
    // Under k alone: total minus the groups shown is the cell, every time.
    let shown: i64 = CA_BY_BRANCH
        .iter()
        .map(|(_, c)| c)
        .filter(|c| **c >= k)
        .sum();
    assert_eq!(ca_total - shown, truth);

    // Under privacy (the FOIA policy's ε = 0.5, L0 = 1), on fresh budgets.
    let epsilon = 0.5;
    let releaser = Releaser::memory();
    let trials: u64 = std::env::var("ESQ_ATTACK_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(400);
    let mut exact_hits = 0u64;
    for trial in 0..trials {
        let user = format!("attacker-{trial}");
        let key = |sql: &str| AnswerKey::simple(&user, "S-foia", sql);
        let by_branch = "SELECT branch, count(*) … WHERE state = 'CA' GROUP BY branch";
        let total_sql = "SELECT count(*) … WHERE state = 'CA'";
        let noisy_total = releaser
            .release(&plan(false, epsilon, 1), &key(total_sql), total(ca_total))
            .await
            .unwrap();
        let grouped = releaser
            .release(
                &plan(true, epsilon, 1),
                &key(by_branch),
                groups(CA_BY_BRANCH, TEXT),
            )
            .await
            .unwrap();
        // Asking again gives the same rows for free: no averaging.
        let again = releaser
            .release(
                &plan(true, epsilon, 1),
                &key(by_branch),
                groups(CA_BY_BRANCH, TEXT),
            )
            .await
            .unwrap();
        assert_eq!(again.rows, grouped.rows);
        assert!(!again.charged);
        let total_seen = count_of(&noisy_total.rows[0], 0, TEXT);
        let small_row = grouped
            .rows
            .iter()
            .find(|r| r[0].as_deref() == Some(SMALL.as_bytes()));
        let estimate = match small_row {
            Some(row) => count_of(row, 1, TEXT),
            None => {
                total_seen
                    - grouped
                        .rows
                        .iter()
                        .map(|r| count_of(r, 1, TEXT))
                        .sum::<i64>()
            }
        };
        exact_hits += u64::from(estimate == truth);
    }

    // The bound: the small cell is shown only if 3 + noise reaches the
    // threshold T; otherwise the estimate is off by the total's noise minus
    // the four shown groups' noises, five independent DLap(2), which is 0
    // with probability P(S5 = 0). (A large group missing would only add
    // error; the clamp at 0 never applies to a total of 2530.)
    let scale = 1.0 / epsilon;
    let threshold = mechanism::threshold_for(epsilon, 1, k as u32).unwrap();
    let p_shown = upper_tail(threshold - truth, scale);
    let p_zero = sum_is_zero(&[scale; 5]);
    let bound = p_zero + p_shown;
    assert!(bound < 0.15, "bound {bound}");
    // Fail by chance with probability ≤ 1e-4: the binomial tail at `bound`.
    let critical = binomial_critical(trials, bound, 1e-4);
    let rate = exact_hits as f64 / trials as f64;
    assert!(
        exact_hits < critical,
        "the attack recovered the cell exactly in {exact_hits}/{trials} ({rate:.3}); \
         the mechanism allows {bound:.4} (critical count {critical})"
    );
    eprintln!(
        "differencing attack: exact in {exact_hits}/{trials} = {rate:.3}; bound {bound:.4}; critical {critical}; k alone: {trials}/{trials}"
    );
}
