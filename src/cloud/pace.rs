//! Pacing to Graph's published budgets (docs/graph-contract.md section 5.2): one sliding
//! window per budget this connector draws from, so requests wait here instead of being
//! refused with 429. No window of a budget's published length (plus a margin for latency
//! jitter) ever holds more than its limit less a small reserve: at least as strict as any
//! reading of "N per window", the emulator's strict model included. A 429 pauses the budget it
//! hit for `Retry-After`; an `x-ms-throttle-limit-percentage` above what b2bsync itself spent
//! (another app sharing the tenant's budget) counts the difference as spent now.
//!
//! Pure bookkeeping plus one async wait; no I/O. The service remains the judge: a pacer that
//! guesses wrong costs a 429 and a retry, never a lost or repeated request.
//!
//! No wait computed here is longer than [`MAX_WAIT`]: a pause for a server's `Retry-After`
//! is capped, and so is the wait for a budget's window to move on.

// Server numbers reach durations and instants here: overflow must be handled, not panic.
#![warn(clippy::arithmetic_side_effects)]

use std::collections::VecDeque;
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

/// Share of each budget's limit b2bsync leaves unspent (at least [`MIN_RESERVE`]): the
/// service counts from its own clock, and a window may hold requests b2bsync did not send
/// (another app, a retry the service counted). It costs 0.5 % of the pace.
const RESERVE_SHARE: f64 = 0.005;
const MIN_RESERVE: f64 = 3.0;

/// Added to every window, multiplied by the time scale: requests admitted here one window
/// apart may reach the service closer together when the first took longer on the way. This
/// covers latency that varies by up to 250 ms (at scale 1).
const JITTER_MARGIN_SECS: f64 = 0.25;

/// How long a 429 without `Retry-After` pauses its budget (at scale 1): Graph's minimum.
const DEFAULT_PAUSE_SECS: f64 = 1.0;

fn reserve(capacity: f64) -> f64 {
    (capacity * RESERVE_SHARE)
        .max(MIN_RESERVE)
        .min(capacity / 2.0)
}

/// A duration of `secs` seconds; a number that is no duration waits [`MAX_WAIT`].
fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs)
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT)
}

#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    /// Never spent (see [`RESERVE_SHARE`]).
    reserve: f64,
    /// The published window, scaled, plus [`JITTER_MARGIN_SECS`] scaled.
    window: Duration,
    /// What was spent in the last window: when, and how much; oldest first.
    spent: VecDeque<(Instant, f64)>,
    spent_sum: f64,
    /// Set by a 429: nothing is sent on this budget before then.
    paused_until: Option<Instant>,
}

impl Bucket {
    fn new(budget: Budget, time_scale: f64) -> Bucket {
        let (capacity, window) = budget.published();
        Bucket {
            capacity,
            reserve: reserve(capacity),
            window: seconds((window + JITTER_MARGIN_SECS) * time_scale),
            spent: VecDeque::new(),
            spent_sum: 0.0,
            paused_until: None,
        }
    }

    /// Forgets what left the window.
    fn prune(&mut self, now: Instant) {
        while let Some(&(at, amount)) = self.spent.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.spent.pop_front();
            self.spent_sum -= amount;
        }
        if self.spent.is_empty() {
            self.spent_sum = 0.0;
        }
    }

    /// How long until `cost` fits (zero when it fits now).
    fn wait_for(&self, cost: f64, now: Instant) -> Duration {
        let paused = self
            .paused_until
            .map(|until| until.saturating_duration_since(now))
            .unwrap_or_default();
        // A cost above what may be spent in one window (never for one request) waits for
        // an empty window.
        let allowed = self.capacity - self.reserve;
        let fits = |spent: f64| spent + cost <= allowed || spent <= 0.0;
        let mut refill = Duration::ZERO;
        if !fits(self.spent_sum) {
            // The oldest spending leaves the window first: wait until enough has.
            let mut left = self.spent_sum;
            refill = self.window;
            for &(at, amount) in &self.spent {
                left -= amount;
                if fits(left) {
                    refill = at
                        .checked_add(self.window)
                        .map(|leaves| leaves.saturating_duration_since(now))
                        .unwrap_or(MAX_WAIT);
                    break;
                }
            }
        }
        paused.max(refill).min(MAX_WAIT)
    }

    fn spend(&mut self, amount: f64, at: Instant) {
        self.spent.push_back((at, amount));
        self.spent_sum += amount;
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
        Pacer {
            buckets: Mutex::new(BUDGETS.map(|b| Bucket::new(b, scale))),
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
        b.capacity = capacity;
        b.reserve = reserve(capacity);
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
            b.prune(now);
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
                buckets[budget.index()].spend(amount, now);
            }
        }
        Duration::ZERO
    }

    /// The service refused a request of `cost` with 429. The budget that
    /// `x-ms-throttle-information` names is full on the service's side: it pauses for
    /// `retry_after` (Graph's minimum of 1 s when there is none), when the service's window
    /// has room again. A 429 that names no limit (a gateway, a service under load) pauses
    /// the budgets the request draws on only for its `Retry-After`.
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
        let pause = match (retry_after, named) {
            (Some(wait), _) => Some(wait),
            (None, Some(_)) => Some(seconds(DEFAULT_PAUSE_SECS * self.time_scale)),
            (None, None) => None,
        };
        let mut buckets = self.lock();
        for budget in budgets {
            let b = &mut buckets[budget.index()];
            // The caller's Retry-After is at most MAX_WAIT already; the min keeps any other
            // caller from pausing a budget for longer, and the sum from overflowing.
            if let Some(until) = pause.and_then(|wait| now.checked_add(wait.min(MAX_WAIT))) {
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
        b.prune(now);
        // The header has one decimal: only a clear difference means someone else. Their
        // share counts as spent now, so it leaves the window no earlier than theirs.
        if usage > used(b) + 0.15 {
            let theirs = b.capacity * usage.min(1.0) - b.spent_sum;
            b.spend(theirs, now);
        }
    }
}

fn used(b: &Bucket) -> f64 {
    b.spent_sum / b.capacity
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
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
    fn a_window_lets_its_limit_less_the_reserve_through_then_waits_for_it_to_move() {
        let pacer = Pacer::new(1.0);
        let invite = Cost::of("POST", "https://g/v1.0/invitations");
        let now = Instant::now();
        // 150 less a reserve of 3.
        for _ in 0..147 {
            assert!(pacer.try_acquire(&invite, now).is_zero());
        }
        // Nothing more until the first of them is one window (5 s plus the margin) old.
        let wait = pacer.try_acquire(&invite, now);
        assert_eq!(wait, Duration::from_millis(5250));
        assert!(
            !pacer
                .try_acquire(&invite, now + Duration::from_millis(5000))
                .is_zero()
        );
        assert!(pacer.try_acquire(&invite, now + wait).is_zero());
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
        // 150 s and the margin, times 0.1.
        assert_eq!(pacer.try_acquire(&patch, now), Duration::from_millis(15025));
    }

    /// Every window of the service's length, wherever it starts, in a simulated run where
    /// requests are always waiting: `limit` at most, and at least 0.95 of it on average.
    fn check_every_window(cost: Cost, budget: Budget, time_scale: f64) {
        let pacer = Pacer::new(time_scale);
        let (limit, window) = budget.published();
        let window = seconds(window * time_scale);
        let start = Instant::now();
        let step = window / 500;
        let mut admitted: Vec<(Instant, f64)> = Vec::new();
        let mut now = start;
        while now < start + window * 6 {
            while pacer.try_acquire(&cost, now).is_zero() {
                admitted.push((now, cost.get(budget)));
            }
            now += step;
        }
        for (i, (at, _)) in admitted.iter().enumerate() {
            let in_window: f64 = admitted[i..]
                .iter()
                .take_while(|(t, _)| t.saturating_duration_since(*at) < window)
                .map(|(_, amount)| amount)
                .sum();
            assert!(
                in_window <= limit,
                "{in_window} in one window of {budget:?}"
            );
        }
        let total: f64 = admitted.iter().map(|(_, amount)| amount).sum();
        assert!(
            total >= 0.95 * 6.0 * limit,
            "{total} of {budget:?} in 6 windows"
        );
    }

    #[test]
    fn no_window_ever_holds_more_than_the_limit() {
        let invite = Cost::of("POST", "https://g/v1.0/invitations");
        check_every_window(invite, Budget::Invitations, 1.0);
        check_every_window(invite, Budget::Invitations, 0.1);
        let patch = Cost::of("PATCH", "https://g/v1.0/users/x");
        check_every_window(patch, Budget::Writes, 0.1);
        let list = Cost::of("GET", "https://g/v1.0/users");
        check_every_window(list, Budget::ResourceUnits, 1.0);
    }

    #[test]
    fn a_429_pauses_the_named_budget_only() {
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
        // Without Retry-After, Graph's minimum of 1 s.
        let other = Pacer::new(1.0);
        other.throttled(&invite, Some("WriteLimitExceeded"), None);
        assert!(other.try_acquire(&invite, Instant::now()) > Duration::from_millis(900));
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
