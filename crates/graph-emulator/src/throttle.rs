//! Throttling (contract §5): token buckets per app+tenant for resource units and the identity
//! write quota, per tenant for writes and for the invitation manager. Windows are multiplied
//! by the time scale; limits never change. Pure bookkeeping: the caller turns a refusal into
//! the 429 response.

use std::collections::HashMap;
use std::time::Instant;

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

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    updated: Instant,
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
    /// Demand over the limit, for `x-ms-throttle-limit-percentage`.
    pub percentage: f64,
}

/// All buckets of one emulator.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    buckets: HashMap<(Kind, String), Bucket>,
}

impl Throttle {
    /// Charges a request to every bucket it draws from, or refuses it without charging any.
    /// On success returns the highest usage fraction (0.0–1.0) among the charged buckets.
    pub fn charge(
        &mut self,
        app_id: &str,
        charge: &Charge,
        users: usize,
        time_scale: f64,
    ) -> Result<f64, Refusal> {
        let now = Instant::now();
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
        let mut usage: f64 = 0.0;
        for (kind, key, capacity, cost) in &wanted {
            let bucket = self
                .buckets
                .entry((*kind, key.clone()))
                .or_insert_with(|| Bucket {
                    tokens: *capacity,
                    capacity: *capacity,
                    updated: now,
                });
            bucket.capacity = *capacity;
            let rate = bucket.capacity / (kind.window_secs() * scale);
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(bucket.capacity);
            bucket.updated = now;
            if bucket.tokens < *cost {
                return Err(Refusal {
                    kind: *kind,
                    wait_secs: (*cost - bucket.tokens) / rate,
                    percentage: (bucket.capacity - bucket.tokens + *cost) / bucket.capacity,
                });
            }
        }
        for (kind, key, _, cost) in &wanted {
            if let Some(bucket) = self.buckets.get_mut(&(*kind, key.clone())) {
                bucket.tokens -= *cost;
                usage = usage.max((bucket.capacity - bucket.tokens) / bucket.capacity);
            }
        }
        Ok(usage)
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

    #[test]
    fn invitation_bucket_allows_150_then_refuses() {
        let mut throttle = Throttle::default();
        let charge = Charge {
            invitation: true,
            ..Charge::default()
        };
        for _ in 0..150 {
            assert!(throttle.charge("app", &charge, 10, 1.0).is_ok());
        }
        let refusal = throttle.charge("app", &charge, 10, 1.0).unwrap_err();
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
        let mut throttle = Throttle::default();
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
