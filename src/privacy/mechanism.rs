//! The noise: OpenDP's vetted samplers, never our own. Counts get integer
//! discrete Laplace noise from OpenDP's exact sampler (CKS20, on big
//! rationals: no floating-point attack), whose randomness comes from
//! OpenSSL's `RAND_priv_bytes` (the `use-openssl` feature) — a CSPRNG,
//! never a seed anyone can predict.
//!
//! * An **ungrouped** count has sensitivity 1 (the rewrite counts each
//!   privacy unit at most once), so it gets scale `1 / ε`; its one row
//!   exists whatever the data, so it is always released. A negative noisy
//!   total is shown as 0: clamping is post-processing of the noisy value
//!   (it reads nothing else), so it costs no privacy; it only biases
//!   totals near zero upwards.
//! * **Grouped** counts go through `make_laplace_threshold`: each unit is
//!   in at most L0 groups, once each (l0 = L0, l1 = L0, l∞ = 1), scale
//!   `L0 / ε`, and a group is released only if its noisy count reaches the
//!   threshold `T`. That makes which groups exist private too, at a cost
//!   δ: the chance that a group holding one person's rows shows up at all.
//!   `T` is the smallest value ≥ max(k, 2) for which OpenDP's own privacy
//!   map proves δ ≤ [`DELTA`]; released counts are ≥ T > 0, so nothing is
//!   clamped there.
//!
//! The privacy map of every measurement built here is checked against the
//! ε the ticket pays for (fail closed if OpenDP disagrees).

use std::collections::HashMap;

use opendp::domains::{AtomDomain, MapDomain};
use opendp::measurements::{make_laplace, make_laplace_threshold};
use opendp::measures::{Approximate, MaxDivergence};
use opendp::metrics::{AbsoluteDistance, L0PInfDistance};

/// δ of one grouped answer: the probability bound on a group that
/// exists only because of one person being released. One in ten million:
/// far below one over the number of people in any dataset esq serves, and
/// small enough that a whole year of daily budgets (a few thousand
/// answers) keeps the sum under 0.1 %.
pub const DELTA: f64 = 1e-7;

/// Slack when comparing OpenDP's ε with the ticket's (its map rounds up).
const EPSILON_SLACK: f64 = 1e-9;

/// The highest threshold searched: far above any sane ε and L0.
const MAX_THRESHOLD: i64 = 1 << 40;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("privacy mechanism: {0}")]
pub struct MechanismError(pub String);

fn opendp_error(err: opendp::error::Error) -> MechanismError {
    MechanismError(format!("{err:?}").lines().next().unwrap_or("").to_string())
}

/// The noise scale of a grouped answer: `L0 / ε`.
pub fn grouped_scale(epsilon: f64, bound: u32) -> f64 {
    f64::from(bound) / epsilon
}

/// One noisy total (sensitivity 1), clamped at 0; see the module docs.
pub fn noisy_total(exact: i64, epsilon: f64) -> Result<i64, MechanismError> {
    let measurement = make_laplace::<_, _, MaxDivergence>(
        AtomDomain::<i64>::default(),
        AbsoluteDistance::<i64>::default(),
        1.0 / epsilon,
        None,
    )
    .map_err(opendp_error)?;
    let spent = measurement.map(&1).map_err(opendp_error)?;
    if spent > epsilon + EPSILON_SLACK {
        return Err(MechanismError(format!(
            "OpenDP puts this answer at epsilon {spent}, above the {epsilon} paid for"
        )));
    }
    Ok(measurement.invoke(&exact).map_err(opendp_error)?.max(0))
}

type Threshold = opendp::core::Measurement<
    MapDomain<AtomDomain<u64>, AtomDomain<i64>>,
    L0PInfDistance<1, AbsoluteDistance<i64>>,
    Approximate<MaxDivergence>,
    HashMap<u64, i64>,
>;

fn threshold_measurement(scale: f64, threshold: i64) -> Result<Threshold, MechanismError> {
    make_laplace_threshold::<_, _, Approximate<MaxDivergence>>(
        MapDomain::new(AtomDomain::<u64>::default(), AtomDomain::<i64>::default()),
        L0PInfDistance(AbsoluteDistance::<i64>::default()),
        scale,
        threshold,
        None,
    )
    .map_err(opendp_error)
}

/// (ε, δ) that OpenDP's privacy map proves for one grouped release.
fn proven(measurement: &Threshold, bound: u32) -> Result<(f64, f64), MechanismError> {
    let l = i64::from(bound);
    measurement.map(&(bound, l, 1)).map_err(opendp_error)
}

/// The smallest threshold ≥ max(k, 2) whose δ is at most [`DELTA`]: from
/// the Laplace tail, `T ≈ 1 + scale · ln(L0 / δ)`, then confirmed (and if
/// need be raised) with OpenDP's privacy map.
pub fn threshold_for(epsilon: f64, bound: u32, k: u32) -> Result<i64, MechanismError> {
    let scale = grouped_scale(epsilon, bound);
    let estimate = 1.0 + scale * (f64::from(bound) / DELTA).ln();
    let floor = i64::from(k.max(2));
    // Start a little below the estimate, so the map finds the least T.
    let mut threshold = floor.max((estimate.floor() as i64) - 2);
    loop {
        if threshold > MAX_THRESHOLD {
            return Err(MechanismError(
                "no threshold reaches the target delta".into(),
            ));
        }
        let (_, delta) = proven(&threshold_measurement(scale, threshold)?, bound)?;
        if delta <= DELTA {
            return Ok(threshold);
        }
        threshold += 1.max(threshold / 64);
    }
}

/// Noisy counts for (group, exact count) pairs: the groups that pass the
/// noisy threshold, with their noisy counts.
pub fn noisy_groups(
    counts: &[(u64, i64)],
    epsilon: f64,
    bound: u32,
    threshold: i64,
) -> Result<HashMap<u64, i64>, MechanismError> {
    let measurement = threshold_measurement(grouped_scale(epsilon, bound), threshold)?;
    let (spent, delta) = proven(&measurement, bound)?;
    if spent > epsilon + EPSILON_SLACK || delta > DELTA {
        return Err(MechanismError(format!(
            "OpenDP puts this answer at ({spent}, {delta}), above ({epsilon}, {DELTA})"
        )));
    }
    let input: HashMap<u64, i64> = counts.iter().copied().collect();
    measurement.invoke(&input).map_err(opendp_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_at_least_k_and_grows_with_the_noise() {
        let strict = threshold_for(0.5, 1, 11).unwrap();
        assert!(strict >= 11);
        // Scale 2: T ≈ 1 + 2 ln(1e7) ≈ 33; OpenDP's map proves δ ≤ 1e-7 at 32.
        assert_eq!(strict, 32);
        assert_eq!(threshold_for(1.0, 1, 11).unwrap(), 16);
        assert!(threshold_for(0.5, 3, 11).unwrap() > strict);
        assert!(threshold_for(5.0, 1, 11).unwrap() == 11);
        assert!(threshold_for(5.0, 1, 40).unwrap() == 40);
    }

    #[test]
    fn large_groups_pass_and_empty_ones_do_not() {
        let counts = [(0u64, 100_000i64), (1, 0), (2, 50_000)];
        let released = noisy_groups(&counts, 1.0, 1, threshold_for(1.0, 1, 11).unwrap()).unwrap();
        assert!(released.contains_key(&0) && released.contains_key(&2));
        assert!(!released.contains_key(&1));
        assert!((released[&0] - 100_000).abs() < 100);
    }

    #[test]
    fn a_total_is_never_negative() {
        for _ in 0..50 {
            assert!(noisy_total(0, 0.1).unwrap() >= 0);
        }
    }
}
