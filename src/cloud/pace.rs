//! Pacing to Graph's published budgets (reference/graph-contract.md section 5.2): one token
//! bucket per budget this connector draws from, so requests wait here instead of being
//! refused with 429. A 429 drains the budget it hit and pauses it for `Retry-After`; an
//! `x-ms-throttle-limit-percentage` above what b2bsync itself spent (another app sharing the
//! tenant's budget) lowers the bucket to what the service reports.
//!
//! Pure bookkeeping plus one async wait; no I/O. The service remains the judge: a pacer that
//! guesses wrong costs a 429 and a retry, never a lost or repeated request.
//!
//! No wait computed here is longer than [`MAX_WAIT`]: a pause for a server's `Retry-After`
//! is capped, and so is the wait for a budget to refill.

// Server numbers reach durations and instants here: overflow must be handled, not panic.
#![warn(clippy::arithmetic_side_effects)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::MAX_WAIT;

/// A budget b2bsync's requests draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Identity and access resource units per app and tenant: 3,500 / 5,000 / 8,000 per 10 s
    /// (tenants under 50 users, up to 500, over 500).
    ResourceUnits,
    /// Identity and access writes per app and tenant: 3,000 per 150 s.
    Writes,
    /// The invitation manager, per tenant for all apps: 150 per 5 s.
    Invitations,
}

const BUDGETS: [Budget; 3] = [Budget::ResourceUnits, Budget::Writes, Budget::Invitations];

impl Budget {
    fn index(self) -> usize {
        match self {
            Budget::ResourceUnits => 0,
            Budget::Writes => 1,
            Budget::Invitations => 2,
        }
    }

    /// Published capacity and window in seconds.
    fn published(self) -> (f64, f64) {
        match self {
            // The smallest tier until the tenant's size is known.
            Budget::ResourceUnits => (3500.0, 10.0),
            Budget::Writes => (3000.0, 150.0),
            Budget::Invitations => (150.0, 5.0),
        }
    }
}

/// What one request costs against each budget (contract section 5.2).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cost {
    pub resource_units: f64,
    pub writes: f64,
    pub invitations: f64,
}

impl Cost {
    /// The published cost of `method` on `url` (a full Graph URL or a `$batch` inner URL).
    /// Every request to `/invitations` is charged to the invitation manager only, as the
    /// emulator does (contract 5.2 `[A]`: which other bucket it draws from is not published).
    pub fn of(method: &str, url: &str) -> Cost {
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, q),
            None => (url, ""),
        };
        let path = path.trim_end_matches('/');
        let resource = path
            .rsplit_once("/v1.0")
            .map(|(_, rest)| rest)
            .unwrap_or(path);
        if resource.starts_with("/invitations") {
            return Cost {
                invitations: 1.0,
                ..Cost::default()
            };
        }
        let has = |name: &str| {
            query.split('&').any(|kv| {
                let key = kv.split('=').next().unwrap_or_default();
                key == format!("${name}") || key == format!("%24{name}")
            })
        };
        let top_below_20 = query.split('&').any(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == "$top" || k == "%24top") && v.parse::<u32>().is_ok_and(|t| t < 20)
        });
        if method.eq_ignore_ascii_case("GET") {
            let base: f64 = if resource == "/users" { 2.0 } else { 1.0 };
            let mut ru = base;
            if has("select") {
                ru -= 1.0;
            }
            if has("expand") {
                ru += 1.0;
            }
            if top_below_20 {
                ru -= 1.0;
            }
            return Cost {
                resource_units: ru.max(1.0),
                ..Cost::default()
            };
        }
        Cost {
            resource_units: 1.0,
            writes: 1.0,
            invitations: 0.0,
        }
    }

    fn get(&self, budget: Budget) -> f64 {
        match budget {
            Budget::ResourceUnits => self.resource_units,
            Budget::Writes => self.writes,
            Budget::Invitations => self.invitations,
        }
    }

    /// The sum of two costs (a `$batch` is charged per inner request).
    pub fn plus(self, other: Cost) -> Cost {
        Cost {
            resource_units: self.resource_units + other.resource_units,
            writes: self.writes + other.writes,
            invitations: self.invitations + other.invitations,
        }
    }
}

/// Tokens of each budget b2bsync leaves unspent, as a share of its capacity (at least
/// [`MIN_RESERVE`]). Requests reach the service with varying latency, so some sent in pace
/// arrive bunched; the service's bucket then holds this reserve to absorb them instead of
/// answering 429. It costs only the first burst, not the pace.
const RESERVE_SHARE: f64 = 0.005;
const MIN_RESERVE: f64 = 3.0;

fn reserve(capacity: f64) -> f64 {
    (capacity * RESERVE_SHARE)
        .max(MIN_RESERVE)
        .min(capacity / 2.0)
}

#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    /// Tokens never spent (see [`RESERVE_SHARE`]).
    reserve: f64,
    /// Tokens per second.
    rate: f64,
    tokens: f64,
    updated: Instant,
    /// Set by a 429: nothing is sent on this budget before then.
    paused_until: Option<Instant>,
}

impl Bucket {
    fn new(budget: Budget, time_scale: f64, now: Instant) -> Bucket {
        let (capacity, window) = budget.published();
        Bucket {
            capacity,
            reserve: reserve(capacity),
            rate: capacity / (window * time_scale),
            tokens: capacity,
            updated: now,
            paused_until: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = now;
    }

    /// How long until `cost` fits (zero when it fits now).
    fn wait_for(&self, cost: f64, now: Instant) -> Duration {
        let paused = self
            .paused_until
            .map(|until| until.saturating_duration_since(now))
            .unwrap_or_default();
        // A cost above the capacity (never for one request) waits for a full bucket.
        let missing = ((cost + self.reserve).min(self.capacity) - self.tokens).max(0.0);
        // The rate is positive and finite (the time scale is checked in `Pacer::new`); a
        // quotient that is no duration still waits no longer than MAX_WAIT.
        let refill = Duration::try_from_secs_f64(missing / self.rate).unwrap_or(MAX_WAIT);
        paused.max(refill).min(MAX_WAIT)
    }
}

/// The buckets of one Graph client. Shared by every concurrent request of a run.
#[derive(Debug)]
pub struct Pacer {
    buckets: Mutex<[Bucket; 3]>,
    time_scale: f64,
}

/// Waits are sliced so that a budget lowered meanwhile (a 429 elsewhere) is seen.
const MAX_SLICE: Duration = Duration::from_millis(250);

impl Pacer {
    /// Buckets at the published limits, full. `time_scale` multiplies every window (1.0
    /// for Microsoft Graph; the emulator's `--time-scale` for rehearsals against it).
    pub fn new(time_scale: f64) -> Pacer {
        let scale = if time_scale.is_finite() && time_scale > 0.0 {
            time_scale
        } else {
            1.0
        };
        let now = Instant::now();
        Pacer {
            buckets: Mutex::new(BUDGETS.map(|b| Bucket::new(b, scale, now))),
            time_scale: scale,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Bucket; 3]> {
        // The buckets are plain numbers; a panic elsewhere cannot leave them inconsistent.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Picks the resource-unit tier for a tenant of `users` users.
    pub fn set_tenant_size(&self, users: usize) {
        let capacity = if users < 50 {
            3500.0
        } else if users <= 500 {
            5000.0
        } else {
            8000.0
        };
        let mut buckets = self.lock();
        let b = &mut buckets[Budget::ResourceUnits.index()];
        if (b.capacity - capacity).abs() > f64::EPSILON {
            b.refill(Instant::now());
            b.tokens = b.tokens / b.capacity * capacity;
            b.capacity = capacity;
            b.reserve = reserve(capacity);
            b.rate = capacity / (10.0 * self.time_scale);
        }
    }

    /// Takes `cost` from every budget it draws on, waiting until all of them have it.
    pub async fn acquire(&self, cost: &Cost) {
        loop {
            let wait = self.try_acquire(cost, Instant::now());
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait.min(MAX_SLICE)).await;
        }
    }

    /// Takes `cost` now and returns zero, or takes nothing and returns how long to wait.
    fn try_acquire(&self, cost: &Cost, now: Instant) -> Duration {
        let mut buckets = self.lock();
        let mut wait = Duration::ZERO;
        for budget in BUDGETS {
            let amount = cost.get(budget);
            if amount <= 0.0 {
                continue;
            }
            let b = &mut buckets[budget.index()];
            b.refill(now);
            if b.paused_until.is_some_and(|until| until <= now) {
                b.paused_until = None;
            }
            wait = wait.max(b.wait_for(amount, now));
        }
        if !wait.is_zero() {
            return wait;
        }
        for budget in BUDGETS {
            let amount = cost.get(budget);
            if amount > 0.0 {
                buckets[budget.index()].tokens -= amount;
            }
        }
        Duration::ZERO
    }

    /// The service refused a request of `cost` with 429. The budget that
    /// `x-ms-throttle-information` names is empty on the service's side: emptied here too,
    /// and paused for `retry_after`. A 429 that names no limit (a gateway, a service under
    /// load) says nothing about the budgets: the ones the request draws on only pause.
    pub fn throttled(&self, cost: &Cost, information: Option<&str>, retry_after: Option<Duration>) {
        let now = Instant::now();
        let named = match information {
            Some(i) if i.eq_ignore_ascii_case("ResourceUnitLimitExceeded") => {
                Some(Budget::ResourceUnits)
            }
            Some(i) if i.eq_ignore_ascii_case("WriteLimitExceeded") && cost.invitations > 0.0 => {
                Some(Budget::Invitations)
            }
            Some(i) if i.eq_ignore_ascii_case("WriteLimitExceeded") => Some(Budget::Writes),
            _ => None,
        };
        let budgets: Vec<Budget> = match named {
            Some(budget) => vec![budget],
            None => BUDGETS.into_iter().filter(|b| cost.get(*b) > 0.0).collect(),
        };
        let mut buckets = self.lock();
        for budget in budgets {
            let b = &mut buckets[budget.index()];
            b.refill(now);
            if named.is_some() {
                b.tokens = 0.0;
            }
            // The caller's Retry-After is at most MAX_WAIT already; the min keeps any other
            // caller from pausing a budget for longer, and the sum from overflowing.
            if let Some(until) = retry_after.and_then(|wait| now.checked_add(wait.min(MAX_WAIT))) {
                b.paused_until = Some(b.paused_until.map_or(until, |p| p.max(until)));
            }
        }
    }

    /// A response carried `x-ms-throttle-limit-percentage: usage` (sent once a budget is past
    /// 80 %). When the service counts clearly more than b2bsync spent itself, another client
    /// shares the budget: lower the fullest bucket the request drew on to what is left.
    pub fn observed(&self, cost: &Cost, usage: f64) {
        if !usage.is_finite() || usage <= 0.0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.lock();
        let fullest = BUDGETS
            .into_iter()
            .filter(|b| cost.get(*b) > 0.0)
            .max_by(|a, b| {
                let ua = used(&buckets[a.index()]);
                let ub = used(&buckets[b.index()]);
                ua.total_cmp(&ub)
            });
        let Some(budget) = fullest else {
            return;
        };
        let b = &mut buckets[budget.index()];
        b.refill(now);
        // The header has one decimal: only a clear difference means someone else.
        if usage > used(b) + 0.15 {
            b.tokens = b.tokens.min(b.capacity * (1.0 - usage.min(1.0)));
        }
    }
}

fn used(b: &Bucket) -> f64 {
    (b.capacity - b.tokens) / b.capacity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_the_published_table() {
        let users = Cost::of("GET", "https://g/v1.0/users?$select=id&$top=999");
        assert_eq!(users.resource_units, 1.0);
        assert_eq!(Cost::of("GET", "https://g/v1.0/users").resource_units, 2.0);
        assert_eq!(
            Cost::of("GET", "https://g/v1.0/users/x").resource_units,
            1.0
        );
        let patch = Cost::of("PATCH", "https://g/v1.0/users/x");
        assert_eq!((patch.resource_units, patch.writes), (1.0, 1.0));
        let invite = Cost::of("POST", "https://g/v1.0/invitations");
        assert_eq!(
            (invite.invitations, invite.writes, invite.resource_units),
            (1.0, 0.0, 0.0)
        );
        assert_eq!(Cost::of("PATCH", "/users/x").writes, 1.0);
    }

    #[test]
    fn a_full_budget_lets_its_capacity_less_the_reserve_through_then_paces_at_the_rate() {
        let pacer = Pacer::new(1.0);
        let invite = Cost::of("POST", "https://g/v1.0/invitations");
        let now = Instant::now();
        // 150 less a reserve of 3 for requests that arrive bunched.
        for _ in 0..147 {
            assert!(pacer.try_acquire(&invite, now).is_zero());
        }
        let wait = pacer.try_acquire(&invite, now);
        // 150 per 5 s: one more token every 33 ms.
        assert!(wait > Duration::from_millis(30) && wait < Duration::from_millis(40));
        assert!(
            pacer
                .try_acquire(&invite, now + Duration::from_millis(34))
                .is_zero()
        );
    }

    #[test]
    fn the_time_scale_shortens_the_windows_not_the_limits() {
        let pacer = Pacer::new(0.1);
        let patch = Cost::of("PATCH", "https://g/v1.0/users/x");
        let now = Instant::now();
        // 3,000 less a reserve of 15.
        for _ in 0..2985 {
            assert!(pacer.try_acquire(&patch, now).is_zero());
        }
        let wait = pacer.try_acquire(&patch, now);
        // 3,000 per 15 s: 5 ms per write.
        assert!(wait > Duration::from_millis(4) && wait < Duration::from_millis(6));
    }

    #[test]
    fn a_429_empties_and_pauses_the_named_budget_only() {
        let pacer = Pacer::new(1.0);
        let patch = Cost::of("PATCH", "https://g/v1.0/users/x");
        let invite = Cost::of("POST", "https://g/v1.0/invitations");
        pacer.throttled(
            &patch,
            Some("WriteLimitExceeded"),
            Some(Duration::from_secs(3)),
        );
        let now = Instant::now();
        assert!(pacer.try_acquire(&patch, now) >= Duration::from_millis(2900));
        assert!(pacer.try_acquire(&invite, now).is_zero());
    }

    // See: issue 10 (`now + wait` panicked; a huge Retry-After paused the run for years).
    #[test]
    fn a_pause_is_never_longer_than_the_maximum_wait() {
        let pacer = Pacer::new(1.0);
        let patch = Cost::of("PATCH", "https://g/v1.0/users/x");
        pacer.throttled(&patch, Some("WriteLimitExceeded"), Some(Duration::MAX));
        let wait = pacer.try_acquire(&patch, Instant::now());
        assert!(
            wait > Duration::from_secs(290) && wait <= MAX_WAIT,
            "{wait:?}"
        );
    }

    #[test]
    fn a_429_that_names_no_limit_only_pauses() {
        let pacer = Pacer::new(1.0);
        let patch = Cost::of("PATCH", "https://g/v1.0/users/x");
        pacer.throttled(&patch, None, Some(Duration::from_millis(200)));
        let now = Instant::now();
        assert!(pacer.try_acquire(&patch, now) > Duration::from_millis(150));
        // After the pause the budget is as full as before: a burst goes through at once.
        let later = now + Duration::from_millis(250);
        for _ in 0..100 {
            assert!(pacer.try_acquire(&patch, later).is_zero());
        }
    }

    #[test]
    fn a_busier_service_lowers_the_bucket_but_its_own_echo_does_not() {
        let pacer = Pacer::new(1.0);
        let invite = Cost::of("POST", "https://g/v1.0/invitations");
        let now = Instant::now();
        // b2bsync spent 130 of 150 itself; the service reports 0.9: nothing changes.
        for _ in 0..130 {
            assert!(pacer.try_acquire(&invite, now).is_zero());
        }
        pacer.observed(&invite, 0.9);
        assert!(pacer.try_acquire(&invite, now).is_zero());
        // A fresh pacer that spent nothing hears 0.9: someone else used the budget.
        let other = Pacer::new(1.0);
        other.observed(&invite, 0.9);
        let mut admitted = 0;
        while other.try_acquire(&invite, now).is_zero() {
            admitted += 1;
        }
        // 15 left, less the reserve of 3.
        assert!((11..=13).contains(&admitted), "{admitted}");
    }
}
