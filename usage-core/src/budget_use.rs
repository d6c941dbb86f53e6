//! How much of a budget is used: one definition for the edge (its `x-tollgate-budget-warning`
//! header and the `budget_threshold` alerts it raises) and the dashboard (a budget's
//! `percent_used` and `thresholds_crossed`), so the two never disagree about the same spend.
//!
//! "Used" is money spent: the cost of calls that have finished. Reservations held by calls in
//! flight (their worst case) are not spend — they decide whether a hard budget admits a call,
//! never whether a threshold was crossed, because most calls settle far below their worst case.

/// Spend as basis points of the limit (1/100 of a percent), rounded down; a limit of zero or
/// less counts as used up once anything is spent.
pub fn used_basis_points(spent_nusd: i128, limit_nusd: i128) -> i128 {
    if limit_nusd <= 0 {
        return if spent_nusd > 0 { 10_000 } else { 0 };
    }
    spent_nusd.max(0).saturating_mul(10_000) / limit_nusd
}

/// Whether `spent` has reached `percent` of `limit`.
pub fn reached(spent_nusd: i128, limit_nusd: i128, percent: u8) -> bool {
    spent_nusd.saturating_mul(100) >= limit_nusd.saturating_mul(i128::from(percent))
}

/// `74.02%`: basis points as a percentage with two decimals (the dashboard shows the same
/// number as `percent_used: 74.02`).
pub fn percent_text(basis_points: i128) -> String {
    format!("{}.{:02}%", basis_points / 100, (basis_points % 100).abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentage_is_rounded_down_and_thresholds_are_inclusive() {
        // The case: 74.02% used is past 50 but not 75.
        let limit = 50_000_000; // $0.05
        let spent = 37_010_000;
        assert_eq!(used_basis_points(spent, limit), 7402);
        assert_eq!(percent_text(used_basis_points(spent, limit)), "74.02%");
        assert!(reached(spent, limit, 50));
        assert!(!reached(spent, limit, 75));
        assert!(reached(limit, limit, 100));
        assert_eq!(used_basis_points(limit - 1, limit), 9999);
        assert_eq!(percent_text(5), "0.05%");
        assert_eq!(used_basis_points(1, 0), 10_000);
        assert_eq!(used_basis_points(0, 0), 0);
    }
}
