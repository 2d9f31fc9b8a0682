//! Throttling (contract §5): limits per app+tenant for resource units and the identity write
//! quota, per tenant for writes and for the invitation manager. Windows are multiplied by the
//! time scale; limits never change. Pure bookkeeping: the caller turns a refusal into the 429
//! response.
//!
//! Microsoft does not publish the exact algorithm (§5.3 says only "token bucket"), so the
//! default model is the conservative reading of "N per window": a **sliding window**, never
//! more than the limit in any window of the published length. A refilling token bucket that
//! starts full ([`Model::Bucket`], the emulator's earlier model) admits up to twice the limit
//! in the first window and remains as an option.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How a limit is enforced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Model {
    /// Never more than the limit in any window of the published length (the default).
    #[default]
    Window,
    /// A token bucket of the limit's size that starts full and refills continuously at
    /// limit ÷ window: up to twice the limit in the first window.
    Bucket,
}

impl std::str::FromStr for Model {
    type Err = String;

    fn from_str(text: &str) -> Result<Model, String> {
        match text {
            "window" => Ok(Model::Window),
            "bucket" => Ok(Model::Bucket),
            other => Err(format!(
                "unknown throttle model '{other}': use window or bucket"
            )),
        }
    }
}

/// Which limit a bucket enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Identity ResourceUnits per app+tenant: 3,500 / 5,000 / 8,000 per 10 s.
    ResourceUnits,
    /// Identity writes per app+tenant: 3,000 per 150 s.
    AppWrites,
    /// Identity writes per tenant (all apps): 18,000 per 300 s.
    TenantWrites,
    /// Invitation manager per tenant (all apps): 150 per 5 s.
    Invitations,
}

impl Kind {
    fn window_secs(self) -> f64 {
        match self {
            Kind::ResourceUnits => 10.0,
            Kind::AppWrites => 150.0,
            Kind::TenantWrites => 300.0,
            Kind::Invitations => 5.0,
        }
    }

    /// `x-ms-throttle-scope` prefix and `x-ms-throttle-information` value.
    pub fn scope_and_information(self) -> (&'static str, &'static str) {
        match self {
            Kind::ResourceUnits => ("Tenant_Application/ReadWrite", "ResourceUnitLimitExceeded"),
            Kind::AppWrites => ("Tenant_Application/Write", "WriteLimitExceeded"),
            Kind::TenantWrites => ("Tenant/Write", "WriteLimitExceeded"),
            Kind::Invitations => ("Tenant/Write", "WriteLimitExceeded"),
        }
    }
}

/// The RU limit for a tenant of `users` users: S under 50, M 50–500, L over 500.
pub(crate) fn resource_unit_limit(users: usize) -> f64 {
    if users < 50 {
        3500.0
    } else if users <= 500 {
        5000.0
    } else {
        8000.0
    }
}

/// The usage of one limit.
#[derive(Debug, Clone)]
struct Bucket {
    limit: f64,
    /// Admitted requests in the current window: arrival and cost, oldest first.
    admitted: VecDeque<(Instant, f64)>,
    admitted_sum: f64,
    /// Refused requests in the current window, for `x-ms-throttle-limit-percentage`.
    refused: VecDeque<(Instant, f64)>,
    refused_sum: f64,
    /// [`Model::Bucket`] only: tokens left and when they were counted.
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn new(limit: f64, now: Instant) -> Bucket {
        Bucket {
            limit,
            admitted: VecDeque::new(),
            admitted_sum: 0.0,
            refused: VecDeque::new(),
            refused_sum: 0.0,
            tokens: limit,
            updated: now,
        }
    }

    /// Forgets what left the window `(now - window, now]`.
    fn prune(&mut self, now: Instant, window: Duration) {
        for (log, sum) in [
            (&mut self.admitted, &mut self.admitted_sum),
            (&mut self.refused, &mut self.refused_sum),
        ] {
            while let Some(&(at, cost)) = log.front() {
                if now.saturating_duration_since(at) < window {
                    break;
                }
                log.pop_front();
                *sum -= cost;
            }
            if log.is_empty() {
                *sum = 0.0;
            }
        }
    }

    /// Seconds until `cost` fits, or `None` when it fits now.
    fn wait(&mut self, model: Model, cost: f64, now: Instant, window: Duration) -> Option<f64> {
        match model {
            Model::Window => {
                if self.admitted_sum + cost <= self.limit {
                    return None;
                }
                // The oldest admissions leave the window first: wait until enough have.
                let mut left = self.admitted_sum;
                for &(at, old) in &self.admitted {
                    left -= old;
                    if left + cost <= self.limit {
                        let leaves = at + window;
                        return Some(leaves.saturating_duration_since(now).as_secs_f64());
                    }
                }
                Some(window.as_secs_f64())
            }
            Model::Bucket => {
                let rate = self.limit / window.as_secs_f64();
                let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
                self.tokens = (self.tokens + elapsed * rate).min(self.limit);
                self.updated = now;
                (self.tokens < cost).then(|| (cost - self.tokens) / rate)
            }
        }
    }

    fn admit(&mut self, cost: f64, now: Instant) {
        self.admitted.push_back((now, cost));
        self.admitted_sum += cost;
        self.tokens -= cost;
    }

    fn refuse(&mut self, cost: f64, now: Instant) {
        self.refused.push_back((now, cost));
        self.refused_sum += cost;
    }

    /// `x-ms-throttle-limit-percentage` (§5.3): usage of the limit up to 1.0; once requests
    /// are refused, 1.0 plus the share refused in the window (1.2 = 20 % throttled), at most
    /// 1.8.
    fn percentage(&self, model: Model) -> f64 {
        if self.refused_sum > 0.0 {
            let share = self.refused_sum / (self.refused_sum + self.admitted_sum);
            return (1.0 + share).min(1.8);
        }
        let used = match model {
            Model::Window => self.admitted_sum,
            Model::Bucket => self.limit - self.tokens,
        };
        (used / self.limit).min(1.0)
    }
}

/// The cost of one request against each bucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct Charge {
    pub resource_units: u32,
    pub writes: u32,
    pub invitation: bool,
}

/// A refused request.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub kind: Kind,
    /// Seconds (already scaled) until the request would fit.
    pub wait_secs: f64,
    /// For `x-ms-throttle-limit-percentage`.
    pub percentage: f64,
}

/// All limits of one emulator.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    pub model: Model,
    buckets: HashMap<(Kind, String), Bucket>,
}

impl Throttle {
    /// Limits enforced by `model`.
    pub fn new(model: Model) -> Throttle {
        Throttle {
            model,
            buckets: HashMap::new(),
        }
    }

    /// Charges a request to every limit it draws from, or refuses it without charging any.
    /// On success returns the highest `x-ms-throttle-limit-percentage` among them.
    pub fn charge(
        &mut self,
        app_id: &str,
        charge: &Charge,
        users: usize,
        time_scale: f64,
    ) -> Result<f64, Refusal> {
        self.charge_at(app_id, charge, users, time_scale, Instant::now())
    }

    /// [`Throttle::charge`] at the instant `now` (tests drive the clock themselves).
    fn charge_at(
        &mut self,
        app_id: &str,
        charge: &Charge,
        users: usize,
        time_scale: f64,
        now: Instant,
    ) -> Result<f64, Refusal> {
        let mut wanted: Vec<(Kind, String, f64, f64)> = Vec::new();
        if charge.invitation {
            wanted.push((Kind::Invitations, String::new(), 150.0, 1.0));
        } else {
            if charge.resource_units > 0 {
                wanted.push((
                    Kind::ResourceUnits,
                    app_id.to_ascii_lowercase(),
                    resource_unit_limit(users),
                    f64::from(charge.resource_units),
                ));
            }
            if charge.writes > 0 {
                wanted.push((
                    Kind::AppWrites,
                    app_id.to_ascii_lowercase(),
                    3000.0,
                    f64::from(charge.writes),
                ));
                wanted.push((
                    Kind::TenantWrites,
                    String::new(),
                    18000.0,
                    f64::from(charge.writes),
                ));
            }
        }
        let scale = if time_scale > 0.0 { time_scale } else { 1.0 };
        let model = self.model;
        for (kind, key, limit, cost) in &wanted {
            // The scale is positive and finite (checked where it is set); a window too long
            // for a Duration is as good as a year.
            let window = Duration::try_from_secs_f64(kind.window_secs() * scale)
                .unwrap_or(Duration::from_secs(365 * 24 * 3600));
            let bucket = self
                .buckets
                .entry((*kind, key.clone()))
                .or_insert_with(|| Bucket::new(*limit, now));
            bucket.limit = *limit;
            bucket.prune(now, window);
            if let Some(wait_secs) = bucket.wait(model, *cost, now, window) {
                bucket.refuse(*cost, now);
                return Err(Refusal {
                    kind: *kind,
                    wait_secs,
                    percentage: bucket.percentage(model),
                });
            }
        }
        let mut percentage: f64 = 0.0;
        for (kind, key, _, cost) in &wanted {
            if let Some(bucket) = self.buckets.get_mut(&(*kind, key.clone())) {
                bucket.admit(*cost, now);
                percentage = percentage.max(bucket.percentage(model));
            }
        }
        Ok(percentage)
    }

    /// Forgets all usage (control API).
    pub fn reset(&mut self) {
        self.buckets.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn invitation() -> Charge {
        Charge {
            invitation: true,
            ..Charge::default()
        }
    }

    /// Admits 150 invitations at real time, then returns the refusal of the 151st.
    fn fill_invitations(throttle: &mut Throttle) -> Refusal {
        for _ in 0..150 {
            assert!(throttle.charge("app", &invitation(), 10, 1.0).is_ok());
        }
        throttle.charge("app", &invitation(), 10, 1.0).unwrap_err()
    }

    #[test]
    fn the_window_admits_the_limit_then_waits_for_the_oldest_to_leave() {
        let refusal = fill_invitations(&mut Throttle::default());
        assert_eq!(refusal.kind, Kind::Invitations);
        // The first admission leaves the 5 s window only 5 s after it came.
        assert!(refusal.wait_secs > 4.9 && refusal.wait_secs <= 5.0);
        // One refused in 151: 1.0 plus the refused share.
        assert!(refusal.percentage > 1.0 && refusal.percentage < 1.01);
    }

    #[test]
    fn no_window_ever_holds_more_than_the_limit() {
        // Window 50 ms (scale 0.01): 20 requests every 2 ms for 300 ms, on the throttle's own
        // clock (a clock read after the call would measure the machine's load, not the rule).
        let mut throttle = Throttle::default();
        let charge = invitation();
        let window = Duration::from_millis(50);
        let started = Instant::now();
        let mut admitted = Vec::new();
        for tick in 0..150u64 {
            let now = started + Duration::from_millis(2 * tick);
            for _ in 0..20 {
                if throttle.charge_at("app", &charge, 10, 0.01, now).is_ok() {
                    admitted.push(now);
                }
            }
        }
        assert!(admitted.len() >= 300, "{}", admitted.len());
        for (i, at) in admitted.iter().enumerate() {
            let within = admitted[i..]
                .iter()
                .take_while(|t| t.saturating_duration_since(*at) < window)
                .count();
            assert!(within <= 150, "{within} in one window");
        }
        // And the window is full, not merely safe: some window holds exactly the limit.
        let fullest = (0..admitted.len())
            .map(|i| {
                admitted[i..]
                    .iter()
                    .take_while(|t| t.saturating_duration_since(admitted[i]) < window)
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert_eq!(fullest, 150);
    }

    #[test]
    fn refusals_raise_the_limit_percentage_by_their_share() {
        let mut throttle = Throttle::default();
        let mut last = fill_invitations(&mut throttle).percentage;
        for _ in 0..149 {
            last = throttle
                .charge("app", &invitation(), 10, 1.0)
                .unwrap_err()
                .percentage;
        }
        // Half of the requests refused: 1.5.
        assert!((last - 1.5).abs() < 0.01, "{last}");
    }

    #[test]
    fn the_bucket_model_refills_continuously() {
        let refusal = fill_invitations(&mut Throttle::new(Model::Bucket));
        assert_eq!(refusal.kind, Kind::Invitations);
        assert!(refusal.wait_secs > 0.0 && refusal.wait_secs <= 5.0 / 150.0 + 0.01);
    }

    #[test]
    fn resource_units_are_summed_per_app() {
        let mut throttle = Throttle::default();
        let list = Charge {
            resource_units: 2,
            ..Charge::default()
        };
        // A huge time scale makes refill negligible during the test.
        for _ in 0..1750 {
            assert!(throttle.charge("app-a", &list, 10, 1e9).is_ok());
        }
        let refusal = throttle.charge("app-a", &list, 10, 1e9).unwrap_err();
        assert_eq!(refusal.kind, Kind::ResourceUnits);
        assert!(refusal.percentage > 1.0);
        assert!(
            throttle.charge("app-b", &list, 10, 1e9).is_ok(),
            "another app has its own bucket"
        );
    }

    #[test]
    fn writes_hit_the_app_quota_then_the_tenant_quota() {
        let mut throttle = Throttle::default();
        let patch = Charge {
            resource_units: 1,
            writes: 1,
            invitation: false,
        };
        for app in 0..6 {
            for _ in 0..3000 {
                assert!(
                    throttle
                        .charge(&format!("app-{app}"), &patch, 600, 1e9)
                        .is_ok()
                );
            }
            let refusal = throttle
                .charge(&format!("app-{app}"), &patch, 600, 1e9)
                .unwrap_err();
            assert!(matches!(refusal.kind, Kind::AppWrites | Kind::TenantWrites));
        }
        let refusal = throttle.charge("app-7", &patch, 600, 1e9).unwrap_err();
        assert_eq!(refusal.kind, Kind::TenantWrites);
    }

    #[test]
    fn usage_is_reported_and_refills_over_the_scaled_window() {
        let mut throttle = Throttle::new(Model::Bucket);
        let invite = Charge {
            invitation: true,
            ..Charge::default()
        };
        let mut usage = 0.0;
        for _ in 0..130 {
            usage = throttle.charge("app", &invite, 10, 0.01).unwrap();
        }
        assert!(usage > 0.8, "{usage}");
        std::thread::sleep(std::time::Duration::from_millis(60));
        // The 0.05 s scaled window has passed: the bucket is full again.
        assert!(throttle.charge("app", &invite, 10, 0.01).unwrap() < 0.1);
    }

    #[test]
    fn tenant_size_picks_the_limit() {
        assert_eq!(resource_unit_limit(49), 3500.0);
        assert_eq!(resource_unit_limit(50), 5000.0);
        assert_eq!(resource_unit_limit(501), 8000.0);
    }
}
