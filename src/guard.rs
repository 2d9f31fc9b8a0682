//! The `guard` stage (pure): checks a whole plan against per-action thresholds before the
//! first write, like Entra Connect's export deletion threshold (default 500 objects).
//!
//! Each category of action (address writes, invitations, re-invitations, password
//! randomizations, user-type changes) has a count limit and a percentage of the accounts in
//! scope. The percentage only applies from `min_count_for_percent` actions on, so a pilot of
//! twenty accounts is not stopped by a 10 % rule. Over any threshold, nothing is written and
//! the run exits with code 4, unless `--allow-over-threshold` (or `limits.allow_over_threshold`)
//! lets it through.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::plan::{Category, Plan};

/// One threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Threshold {
    /// More actions than this in one run is over the threshold.
    pub max_count: usize,
    /// More than this percentage of the accounts in scope is over the threshold.
    pub max_percent: f64,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold {
            max_count: 500,
            max_percent: 10.0,
        }
    }
}

/// The `[limits]` section of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub address_writes: Threshold,
    pub invitations: Threshold,
    pub reinvitations: Threshold,
    pub password_randomizations: Threshold,
    pub session_revocations: Threshold,
    pub user_type_changes: Threshold,
    /// The percentage rules apply only when a category has at least this many actions.
    pub min_count_for_percent: usize,
    /// Let every run through (as `--allow-over-threshold` does for one run).
    pub allow_over_threshold: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            address_writes: Threshold::default(),
            invitations: Threshold::default(),
            reinvitations: Threshold::default(),
            password_randomizations: Threshold::default(),
            session_revocations: Threshold::default(),
            user_type_changes: Threshold::default(),
            min_count_for_percent: 20,
            allow_over_threshold: false,
        }
    }
}

impl Limits {
    /// The threshold of a category.
    pub fn threshold(&self, category: Category) -> Threshold {
        match category {
            Category::AddressWrites => self.address_writes,
            Category::Invitations => self.invitations,
            Category::Reinvitations => self.reinvitations,
            Category::PasswordRandomizations => self.password_randomizations,
            Category::SessionRevocations => self.session_revocations,
            Category::UserTypeChanges => self.user_type_changes,
        }
    }
}

/// Which limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Count,
    Percent,
}

/// One threshold a plan exceeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exceeded {
    pub category: Category,
    pub count: usize,
    pub scope: usize,
    pub limit: Limit,
    pub threshold: Threshold,
}

impl Exceeded {
    /// The percentage of scope the count represents.
    pub fn percent(&self) -> f64 {
        if self.scope == 0 {
            100.0
        } else {
            // Precision loss is irrelevant for counts far below 2^52.
            #[allow(clippy::cast_precision_loss)]
            let p = self.count as f64 * 100.0 / self.scope as f64;
            p
        }
    }

    /// How to get past it.
    pub fn help(&self) -> String {
        let key = self.category.as_str();
        match self.limit {
            Limit::Count => format!(
                "review the plan; if it is intended, raise `limits.{key}.max_count` in the config (or B2BSYNC__LIMITS__{}__MAX_COUNT), or run once with --allow-over-threshold",
                key.to_uppercase()
            ),
            Limit::Percent => format!(
                "review the plan; if it is intended, raise `limits.{key}.max_percent` in the config, or run once with --allow-over-threshold"
            ),
        }
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.category.as_str().replace('_', " ");
        match self.limit {
            Limit::Count => write!(
                f,
                "{} {what} planned, more than the limit of {}\nhelp: {}",
                self.count,
                self.threshold.max_count,
                self.help()
            ),
            Limit::Percent => write!(
                f,
                "{} {what} planned, {:.1} % of {} accounts in scope, more than the limit of {} %\nhelp: {}",
                self.count,
                self.percent(),
                self.scope,
                self.threshold.max_percent,
                self.help()
            ),
        }
    }
}

/// The guard's verdict on a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Thresholds exceeded, in category order.
    pub exceeded: Vec<Exceeded>,
    /// Whether the plan may be applied (nothing exceeded, or an override allows it).
    pub allowed: bool,
}

/// Checks `plan` against `limits`. `allow_over_threshold` is the command-line override.
pub fn check(plan: &Plan, limits: &Limits, allow_over_threshold: bool) -> Verdict {
    // An incremental plan lists only the accounts it considered: the others are in scope too.
    let scope = plan.accounts.len() + plan.summary.unchanged;
    let mut exceeded = Vec::new();
    for (category, count) in &plan.summary.actions {
        let threshold = limits.threshold(*category);
        let count = *count;
        let mut e = Exceeded {
            category: *category,
            count,
            scope,
            limit: Limit::Count,
            threshold,
        };
        if count > threshold.max_count {
            exceeded.push(e);
        } else if count >= limits.min_count_for_percent && e.percent() > threshold.max_percent {
            e.limit = Limit::Percent;
            exceeded.push(e);
        }
    }
    let allowed = exceeded.is_empty() || allow_over_threshold || limits.allow_over_threshold;
    Verdict { exceeded, allowed }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::model::Lifecycle;
    use crate::plan::{AccountOutcome, Summary};

    fn plan_with(scope: usize, actions: &[(Category, usize)]) -> Plan {
        let outcome = AccountOutcome::undecided(Lifecycle::Ready, Lifecycle::Ready);
        Plan {
            schema_version: 1,
            generated_at: String::new(),
            fingerprint: String::new(),
            mappings: vec![],
            actions: vec![],
            accounts: vec![outcome; scope],
            summary: Summary {
                accounts: scope,
                actions: actions.iter().copied().collect(),
                ..Summary::default()
            },
            carried: vec![],
        }
    }

    #[test]
    fn count_and_percent_thresholds() {
        let limits = Limits::default();
        // A small pilot: 15 of 20 is 75 %, but under min_count_for_percent.
        let v = check(
            &plan_with(20, &[(Category::Invitations, 15)]),
            &limits,
            false,
        );
        assert!(v.allowed && v.exceeded.is_empty());
        // 300 of 1000 = 30 % > 10 %.
        let v = check(
            &plan_with(1000, &[(Category::AddressWrites, 300)]),
            &limits,
            false,
        );
        assert_eq!(v.exceeded.len(), 1);
        assert_eq!(v.exceeded[0].limit, Limit::Percent);
        assert!(!v.allowed);
        assert!(v.exceeded[0].to_string().contains("help: "));
        // 501 of 100000 is over the count.
        let v = check(
            &plan_with(100_000, &[(Category::PasswordRandomizations, 501)]),
            &limits,
            false,
        );
        assert_eq!(v.exceeded[0].limit, Limit::Count);
        assert!(
            v.exceeded[0]
                .to_string()
                .contains("limits.password_randomizations.max_count")
        );
        // The override lets it through but still reports.
        let v = check(
            &plan_with(100_000, &[(Category::PasswordRandomizations, 501)]),
            &limits,
            true,
        );
        assert!(v.allowed && v.exceeded.len() == 1);
    }

    #[test]
    fn limits_deserialize_with_defaults() {
        let l: Limits = toml::from_str("[invitations]\nmax_count = 50\n").unwrap();
        assert_eq!(l.invitations.max_count, 50);
        assert_eq!(l.invitations.max_percent, 10.0);
        assert_eq!(l.address_writes, Threshold::default());
        assert!(toml::from_str::<Limits>("[invitatons]\nmax_count = 5\n").is_err());
    }
}
